"""Reward functions used by the trainer tests through `module:function` paths."""

import json
import os
import time


def every_other_none(completions, **kwargs):
    """Fails (None) on every other completion, so the trainer must impute half of this component."""
    return [None if i % 2 else float(len(c) % 7) / 7 for i, c in enumerate(completions)]


def record_ids(completions, id, trainer_state, **kwargs):
    """Appends (global step, ids) to $HIMED_TEST_ID_LOG and scores 0: the data order a run saw.

    With $HIMED_TEST_SLOW_AFTER_STEP set, every later step sleeps $HIMED_TEST_STEP_DELAY seconds, so that a test can
    kill the run after a checkpoint, before the run ends (without it a tiny run can finish first).
    """
    slow_after = os.environ.get("HIMED_TEST_SLOW_AFTER_STEP")
    if slow_after is not None and trainer_state.global_step >= int(slow_after):
        time.sleep(float(os.environ.get("HIMED_TEST_STEP_DELAY", "3")))
    with open(os.environ["HIMED_TEST_ID_LOG"], "a") as handle:
        handle.write(json.dumps({"step": trainer_state.global_step, "ids": list(id)}) + "\n")
    return [0.0 for _ in completions]


class BrokenDescribe:
    """Scores 0 and raises from describe(): a checkpoint's provenance must record the error, not crash the save."""

    def __init__(self):
        self.calls = 0

    def __call__(self, completions, **kwargs):
        self.calls += 1
        return [0.0 for _ in completions]

    def describe(self):
        raise RuntimeError("describe is broken")


def dies_at_step_2(completions, trainer_state, **kwargs):
    """Scores 1 until global step 2, then None on every completion: a component that went away mid-run."""
    return [None if trainer_state.global_step >= 2 else 1.0 for _ in completions]
