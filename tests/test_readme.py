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


def test_readme_has_the_two_setup_commands():
    commands = re.findall(r"```bash\n(python3 -m venv .*?)\n```", README)
    assert len(commands) == 2
    assert "himed pipeline recipes/quickstart/pipeline.yaml" in commands[0]
    assert commands[1].endswith("pytest")
    assert all("-c constraints/cpu.txt" in command for command in commands)
