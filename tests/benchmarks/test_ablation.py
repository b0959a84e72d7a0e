"""benchmarks/ablation.py and benchmarks/learning_signal.py: the variants' reward blocks, the per-seed pipeline and
the summaries, without training anything (the runs themselves are the benchmarks)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from himed.rewards.config import RewardsConfig
from himed.trainers.pipeline import PipelineConfig

ROOT = Path(__file__).resolve().parents[2]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ablation = load("ablation")
learning_signal = load("learning_signal")


def test_variants_change_one_thing_each():
    recipe = yaml.safe_load((ROOT / "recipes" / "quickstart" / "grpo.yaml").read_text())
    names = [entry["name"] for entry in recipe["rewards"]]
    blocks = {variant: ablation.variant_block(variant, 60) for variant in ablation.VARIANTS}
    # The full block's linear schedule is scaled to the run's length, so its weights move within the budget.
    assert blocks["full"]["schedule"] == {**recipe["schedule"], "total_steps": 60}
    assert [entry["name"] for entry in blocks["full"]["rewards"]] == names
    assert blocks["constant"] == {"schedule": {"name": "constant", "alpha_low": 0.5}, "rewards": recipe["rewards"]}
    assert [entry["name"] for entry in blocks["no_semantic"]["rewards"]] == [n for n in names if n != "semantic"]
    for removed in ("concept", "token"):
        kept = [entry["name"] for entry in blocks[f"no_{removed}"]["rewards"]]
        assert kept == [n for n in names if n != removed]
    for block in blocks.values():  # each is a valid reward block, as the GRPO recipe will parse it
        config = RewardsConfig.from_dict(block)
        assert config.rewards
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        ablation.variant_block("nope", 60)


def test_summary_over_seeds_and_gathering(tmp_path):
    for seed, f1 in ((0, 0.2), (1, 0.4)):
        cell = tmp_path / "full" / f"seed{seed}"
        cell.mkdir(parents=True)
        (cell / "cell.json").write_text(
            json.dumps({"variant": "full", "seed": seed, "metrics": {"ce_micro_f1_14": f1}})
        )
    result = ablation.gather(tmp_path, tmp_path / "out.json", {"steps": 1})
    assert [(run["variant"], run["seed"]) for run in result["runs"]] == [("full", 0), ("full", 1)]
    summary = result["summary"]["full"]["ce_micro_f1_14"]
    assert summary["mean"] == pytest.approx(0.3) and summary["std"] == pytest.approx(0.1414, abs=1e-4)
    assert (summary["min"], summary["max"], summary["n"]) == (0.2, 0.4, 2)
    assert json.loads((tmp_path / "out.json").read_text())["steps"] == 1


def test_a_seeded_learning_signal_pipeline_is_the_quickstart_in_its_own_folder(tmp_path):
    path = learning_signal.seeded_pipeline(2, tmp_path / "seed2")
    config = PipelineConfig.from_file(path)
    assert config.output_dir == str(tmp_path / "seed2") and config.base_model == str(tmp_path / "seed2" / "tiny-model")
    data, model = config.prepare
    assert data[data.index("--seed") + 1] == "0" and model[model.index("--seed") + 1] == "2"  # data fixed, init seeded
    assert all(stage.overrides["seed"] == 2 for stage in config.stages)
    assert all(stage.overrides["data_path"] == str(tmp_path / "seed2" / "demo") for stage in config.stages)
    assert config.evaluate.data_path == str(tmp_path / "seed2" / "demo")
    spread = learning_signal.spread([{"a": {"x": 1.0}}, {"a": {"x": 3.0}}], ("a",))
    assert spread == {"x": {"mean": 2.0, "min": 1.0, "max": 3.0}}


def test_the_readme_table_is_read_from_the_record():
    metrics = {key: 0.5 for key in ablation.TABLE_METRICS}
    runs = [{"variant": "full", "seed": s, "metrics": {**metrics, "bleu_4": 0.1 * (s + 1)}} for s in (0, 1)]
    table = ablation.markdown_table({"sft": metrics, "runs": runs, "summary": ablation.summarise(runs)})
    lines = table.splitlines()
    assert lines[0].startswith("| variant | seeds | ce_micro_f1_14 |") and lines[2].startswith(
        "| SFT (start) | - | 0.500"
    )
    assert "| full | 2 | 0.500 ± 0.000 |" in lines[3] and "0.150 ± 0.071" in lines[3]
