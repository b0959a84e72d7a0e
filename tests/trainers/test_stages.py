"""The shared stage module: the patient-data guard applies to every stage, before anything loads."""

from pathlib import Path

import pytest
from trl import ModelConfig, SFTConfig

from himed.trainers.config import DataArguments, SFTStageArguments, parse_recipe
from himed.trainers.sft import run_sft

ROOT = Path(__file__).resolve().parents[2]
CPU = ["--bf16", "false", "--use_cpu", "true"]


def never_load(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a model or dataset was loaded before validation finished")

    monkeypatch.setattr("himed.models.loading.load_policy", fail)
    monkeypatch.setattr("himed.models.loading.load_processor", fail)
    monkeypatch.setattr("himed.data.loaders.load_rows", fail)


def sft_recipe(tmp_path, *flags):
    recipe = ["--config", str(ROOT / "recipes/quickstart/sft.yaml"), "--output_dir", str(tmp_path / "out"), *CPU]
    return parse_recipe([DataArguments, SFTStageArguments, SFTConfig, ModelConfig], [*recipe, *flags])


def test_sft_refuses_to_publish_patient_data_before_loading(tmp_path, monkeypatch):
    never_load(monkeypatch)
    with pytest.raises(ValueError, match="patient data"):
        run_sft(*sft_recipe(tmp_path, "--push_to_hub", "true", "--hub_model_id", "someone/model"))
    # allow_remote_patient_data is a field every stage's recipe has: with it, the run goes on to load (here: fails).
    with pytest.raises(AssertionError, match="loaded"):
        run_sft(
            *sft_recipe(
                tmp_path,
                "--push_to_hub",
                "true",
                "--hub_model_id",
                "someone/model",
                "--allow_remote_patient_data",
                "true",
            )
        )
