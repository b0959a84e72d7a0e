"""docs/ and README.md agree with the code: links stay in the repo, flags and paths exist, tables are current.

What can be generated (the reward and schedule tables of docs/rewards.md) is regenerated here and compared; what
cannot is checked where the code can say: every command-line flag a page names exists in the parser of its
command, every recipe override is a recipe field, every path under recipes/, launch/ and himed/ exists, and the
defaults the tables give are the code's.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path, PurePosixPath

import pytest

from himed.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
# Pages other branches write; the index links them, and they may be absent until those branches are merged.
PAGES_WRITTEN_ELSEWHERE = {
    "architecture.md",
    "images.md",
    "vllm.md",
    "evaluation.md",
    "metrics-rexrank.md",
    "reward-hacking.md",
    "judges.md",
}
OWN_PAGES = ("index.md", "data.md", "rewards.md", "scoring.md", "recipes.md", "launch.md")
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.DOTALL)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _documents() -> list[Path]:
    return [ROOT / "README.md", *PAGES]


def _snippets(text: str) -> list[str]:
    """Code to check: each line of every fenced block, and every inline code span outside them."""
    lines = [line for block in FENCE.findall(text) for line in block.splitlines()]
    return lines + CODE_SPAN.findall(FENCE.sub("", text))


def test_our_pages_exist():
    for name in OWN_PAGES:
        assert (DOCS / name).is_file(), name


@pytest.mark.parametrize("path", _documents(), ids=lambda p: p.name)
def test_links_stay_inside_the_repository_and_resolve(path):
    text = _read(path)
    assert "DESIGN.md" not in text and "../shared" not in text, f"{path.name} points outside the repository"
    for target in LINK.findall(text):
        assert not re.match(r"[a-z]+:", target), f"{path.name}: {target} links outside the repository"
        file = (path.parent / target.split("#")[0]).resolve()
        assert file.is_relative_to(ROOT), f"{path.name}: {target} leaves the repository"
        if file.parent == DOCS and file.name in PAGES_WRITTEN_ELSEWHERE:
            continue  # linked ahead of the branch that writes it
        assert file.exists(), f"{path.name}: broken link {target}"


def test_index_links_every_page():
    linked = {target.split("#")[0] for target in LINK.findall(_read(DOCS / "index.md"))}
    expected = {page.name for page in PAGES if page.name != "index.md"} | PAGES_WRITTEN_ELSEWHERE
    assert expected <= linked, f"docs/index.md does not link {sorted(expected - linked)}"


# --- command lines ----------------------------------------------------------------------------------------------


def _subparsers(parser) -> dict:
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            return dict(action.choices)
    return {}


def _himed_commands() -> dict[str, set[str]]:
    """``"score"``, ``"data demo"``, ... -> the option strings of that command's parser."""
    commands = {}
    for name, sub in _subparsers(build_parser()).items():
        nested = _subparsers(sub)
        for inner, parser in nested.items():
            commands[f"{name} {inner}"] = {s for a in parser._actions for s in a.option_strings}
        if not nested:
            commands[name] = {s for a in sub._actions for s in a.option_strings}
    return commands


COMMANDS = _himed_commands()
COMMAND = re.compile(r"\bhimed (" + "|".join(sorted(map(re.escape, COMMANDS), key=len, reverse=True)) + r")\b")


def _flags(text: str) -> list[str]:
    return re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", text)


def _recipe_fields(script: str) -> set[str]:
    from trl import GRPOConfig, ModelConfig, SFTConfig

    from himed.trainers.config import DataArguments, RewardArguments, SFTStageArguments

    classes = [DataArguments, ModelConfig]
    classes += [RewardArguments, GRPOConfig] if "grpo" in script else [SFTStageArguments, SFTConfig]
    return {f"--{f.name}" for cls in classes for f in dataclasses.fields(cls)} | {"--config"}


def _accelerate_flags() -> set[str]:
    from accelerate.commands.launch import launch_command_parser

    return {s for a in launch_command_parser()._actions for s in a.option_strings}


@pytest.mark.parametrize("path", _documents(), ids=lambda p: p.name)
def test_every_himed_flag_in_a_command_line_exists(path):
    for snippet in _snippets(_read(path)):
        for part in re.split(r"&&|;|\|(?!\|)", snippet):
            match = COMMAND.search(part)
            if match is None:
                continue
            command = match.group(1)
            for flag in _flags(part[match.end() :]):
                assert flag in COMMANDS[command], f"{path.name}: `himed {command}` has no flag {flag}: {part.strip()}"


@pytest.mark.parametrize("path", _documents(), ids=lambda p: p.name)
def test_recipe_overrides_are_recipe_fields_and_launcher_flags_exist(path):
    accelerate = _accelerate_flags()
    for snippet in _snippets(_read(path)):
        snippet = snippet.split("#")[0].replace("\\", " ")
        match = re.search(r"recipes/(himed_grpo|sft)\.py", snippet)
        if match is None:
            continue
        before, after = snippet[: match.start()], snippet[match.end() :]
        fields = _recipe_fields(match.group(1))
        for flag in _flags(after):
            assert flag in fields, f"{path.name}: {flag} is not a field of {match.group(0)}'s recipe: {snippet}"
        if "accelerate launch" in before:
            for flag in _flags(before.split("accelerate launch", 1)[1]):
                assert flag in accelerate, f"{path.name}: accelerate launch has no {flag}"


def _command_tables(text: str) -> list[tuple[str, str, str]]:
    """``(command, flag, default cell)`` for each table row whose first cell is a flag, under a heading that names
    a himed command (the flag table of that command)."""
    rows, command = [], None
    for line in text.splitlines():
        if line.startswith("#"):
            match = COMMAND.search(line)
            command = match.group(1) if match else None
        elif command and line.startswith("| `--"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows.append((command, cells[0].strip("`").split()[0], cells[1] if len(cells) > 2 else ""))
    return rows


@pytest.mark.parametrize("path", _documents(), ids=lambda p: p.name)
def test_flag_tables_name_real_flags(path):
    for command, flag, _ in _command_tables(_read(path)):
        assert flag in COMMANDS[command], f"{path.name}: `himed {command}` has no flag {flag}"


def test_demo_flag_defaults_are_the_parsers():
    parser = _subparsers(_subparsers(build_parser())["data"])["demo"]
    defaults = {s: a.default for a in parser._actions for s in a.option_strings}
    checked = 0
    for command, flag, default in _command_tables(_read(DOCS / "data.md")):
        if command != "data demo" or default in ("off", "up to 2"):
            continue
        code = defaults[flag]
        assert default.strip("`") == str(code), f"data.md: {flag} default {default} but the parser has {code!r}"
        checked += 1
    assert checked >= 6


# --- paths, formats, tables -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _documents(), ids=lambda p: p.name)
def test_named_repository_paths_exist(path):
    text = _read(path)
    # A path followed by a wildcard or placeholder (`recipes/qwen2.5-vl-*/`, `recipes/<setup>/`) names a family.
    pattern = r"(?<![\w/.~-])((?:recipes|launch|himed|benchmarks|constraints)/[\w./-]*\w)(?![\w./-]*[*<{])"
    for name in re.findall(pattern, text):
        if name.startswith("himed/") and "." not in name.rsplit("/", 1)[-1]:
            name += "/"  # a package folder
        assert (ROOT / name).exists(), f"{path.name} names {name}, which does not exist"


def test_recipe_pages_list_every_setup_and_stage():
    text = _read(DOCS / "recipes.md")
    setups = sorted(p.name for p in (ROOT / "recipes").iterdir() if p.is_dir())
    stages = sorted({p.name for setup in setups for p in (ROOT / "recipes" / setup).glob("*.yaml")})
    for name in setups + stages:
        assert f"`{name}`" in text or f"/{name}`" in text, f"recipes.md does not mention {name}"


def _field_table_rows(text: str, heading: str) -> list[tuple[list[str], list[str]]]:
    """``([field, ...], [default, ...])`` of the field table following ``heading``."""
    block = text.split(heading, 1)[1]
    rows = []
    for line in block.splitlines()[1:]:
        if line.startswith("**") or line.startswith("#"):
            break
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            names = [c.strip("` ") for c in cells[0].split(",")]
            # "`train_split`, `eval_split` | `train`, none": one default per name; otherwise the cell is one value.
            defaults = [c.strip("` ") for c in cells[1].split(",")] if len(names) > 1 else [cells[1].strip("` ")]
            rows.append((names, defaults))
    return rows


def _shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


@pytest.mark.parametrize(
    ("heading", "class_name"),
    [("**Data fields**", "DataArguments"), ("**Supervised stage fields**", "SFTStageArguments")],
)
def test_recipe_field_tables_give_the_dataclass_defaults(heading, class_name):
    import himed.trainers.config as config

    cls = getattr(config, class_name)
    instance_fields = {f.name: f for f in dataclasses.fields(cls)}
    rows = _field_table_rows(_read(DOCS / "recipes.md"), heading)
    assert rows
    for names, defaults in rows:
        for i, name in enumerate(names):
            assert name in instance_fields, f"recipes.md: {class_name} has no field {name}"
            f = instance_fields[name]
            value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            shown = defaults[i] if i < len(defaults) else defaults[-1]
            if shown == "(required)":
                assert value is None
                continue
            assert shown == _shown(value), f"recipes.md: {name} default {shown!r}, the code has {value!r}"
    documented = {name for names, _ in rows for name in names}
    assert documented == set(instance_fields), f"recipes.md misses {sorted(set(instance_fields) - documented)}"


def test_pipeline_keys_are_the_pipeline_config():
    from himed.trainers.pipeline import EvaluationConfig, PipelineConfig, StageConfig

    text = _read(DOCS / "recipes.md").split("## Pipelines", 1)[1]
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    keys = {line.strip("|").split("|")[0].strip(" `") for line in rows}
    assert keys == {f.name for f in dataclasses.fields(PipelineConfig)}
    evaluate = next(line for line in rows if line.startswith("| `evaluate` |"))
    named_keys = {span for span in CODE_SPAN.findall(evaluate.split("|")[2]) if re.fullmatch(r"[a-z_]+", span)}
    assert named_keys == {f.name for f in dataclasses.fields(EvaluationConfig)}
    stages = next(line for line in rows if line.startswith("| `stages` |"))
    named = set(re.findall(r"[a-z_]+", re.split(r"(?<!\\)\|", stages)[2]))
    assert {f.name for f in dataclasses.fields(StageConfig)} <= named


def test_data_page_names_every_format_and_its_options():
    from himed.data.loaders import LOADERS, accepted_loader_options

    text = _read(DOCS / "data.md")
    for name in LOADERS:
        section = text.split(f"### `{name}`", 1)
        assert len(section) == 2, f"data.md has no section for format {name}"
        body = section[1].split("\n### ", 1)[0]
        for option in accepted_loader_options(name):
            assert f"`{option}`" in body, f"data.md: format {name} takes {option}, not documented"


def test_generated_tables_are_current():
    from himed.rewards.catalogue import update_page

    text = _read(DOCS / "rewards.md")
    assert update_page(text, "docs/rewards.md") == text, (
        "docs/rewards.md is stale: regenerate it with `himed rewards --update docs/rewards.md`"
    )


def test_radgraph_setup_command_is_the_bridges():
    from himed.clinical.radgraph import SETUP_COMMAND

    assert SETUP_COMMAND in _read(DOCS / "rewards.md")


def test_observation_names_are_the_labelers():
    from himed.clinical.observations import CHEXBERT_OBSERVATIONS, FIVE_OBSERVATIONS

    text = " ".join(_read(DOCS / "data.md").split())
    assert ", ".join(CHEXBERT_OBSERVATIONS) + "." in text
    assert "(" + ", ".join(sorted(FIVE_OBSERVATIONS)) + ":" in text


def test_score_command_lines_parse():
    # The literal command lines of scoring.md parse with the real parser (required flags included).
    parser = build_parser()
    lines = [line for block in FENCE.findall(_read(DOCS / "scoring.md")) for line in block.splitlines()]
    commands = [line for line in lines if line.startswith("himed ")]
    assert len(commands) >= 4
    for line in commands:
        words = [w for w in shlex.split(re.sub(r"\[[^\]]*\]", "", line))]
        parser.parse_args(words[1:])


@pytest.mark.parametrize("path", _documents(), ids=lambda p: p.name)
def test_compare_command_lines_name_their_runs_apart(path):
    # himed compare names each run after the folder holding its metrics.json and refuses two runs of one name, so a
    # documented line over runs/*/eval folders needs --names.
    lines = [line for block in FENCE.findall(_read(path)) for line in block.splitlines()]
    for line in lines:
        if not line.startswith("himed compare ") or "--names" in line:
            continue
        runs = [word for word in shlex.split(line)[2:] if not word.startswith("-") and "/" in word]
        names = [PurePosixPath(run).parent.name if run.endswith(".json") else PurePosixPath(run).name for run in runs]
        assert len(set(names)) == len(names), f"{path.name}: {line!r} names its runs {names}; add --names"
