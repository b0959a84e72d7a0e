"""Fixtures of the trainer tests."""

import pytest


@pytest.fixture
def never_load(monkeypatch):
    """Make every model and dataset loader raise: a test using it shows that validation ran before any loading."""

    def fail(*args, **kwargs):
        raise AssertionError("a model or dataset was loaded before validation finished")

    monkeypatch.setattr("himed.models.loading.load_policy", fail)
    monkeypatch.setattr("himed.models.loading.load_processor", fail)
    monkeypatch.setattr("himed.data.loaders.load_rows", fail)
