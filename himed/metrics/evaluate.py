"""``himed evaluate``: score generated reports, from a predictions file or by generating them from a model first.

Scoring a predictions JSONL (DESIGN.md section 4). Each line holds ``prediction`` (section tags allowed) and
``reference`` (or ``findings``/``impression``, joined as DESIGN.md section 2 says), optionally ``id``. With
``--data``, references come from the dataset rows instead, matched by ``id``. Then, for ``--section``:

- ``report``: the prediction's lenient extraction (sections.py) against the reference;
- ``findings`` / ``impression``: the prediction's section from the strict parse (an empty text when the parse
  fails: a model that breaks the format scores 0 for that section rather than being left out) against the
  reference's ``findings`` / ``impression``. Lines whose reference has no such section are left out, counted in
  ``config.excluded``.

Metrics (``himed.metrics``): NLG metrics on the R2Gen-cleaned texts (``--clean``; nlg.py); clinical efficacy on the
labels of the uncleaned section texts (labelers are built for report text as written; CheXbert is uncased, so
cleaning would only remove punctuation the rule labeler uses for scope); RadGraph F1 (simple, partial, complete;
mean over the pairs RadGraph could annotate) on the uncleaned texts when a RadGraph environment is configured
(``himed.clinical.radgraph``); severity (``himed.clinical.severity``);
``format_rate`` (strict parse succeeds), ``consistency_rate`` (strictly parsed predictions whose finding and
impression sections have no label clash, ``himed.rewards.consistency``); ``length_mean`` and
``length_mean_reference`` (tokens of the cleaned texts as the NLG scorers see them, punctuation tokens included).

Writes ``DIR/metrics.json`` ``{"metrics": {name: number}, "config": {...}, "n": int}`` and ``DIR/metrics.md`` (the
same numbers as a table, generated from the same dict). A metric that is undefined for the evaluated set (a
correlation over a constant, consistency without any parsable prediction) is left out of ``metrics`` and its reason
recorded in ``config.undefined``; it is never written as 0.

Generating first (``--model``): rows from ``load_rows``, prompts from ``build_prompt``, greedy decoding in batches
with a progress bar, each prediction appended to ``DIR/predictions.jsonl`` as soon as its batch is done. A rerun
with the same ``--out-dir`` skips the ids already there (an interrupted run resumes); ``DIR/generation.json``
records the settings, and a rerun with different ones is an error rather than a silently mixed file. Backends:
``hf`` (``model.generate`` with left padding; CPU or GPU) and ``vllm`` (GPU; imported only when asked for).
``--hierarchical`` decodes as the Hi-MrGn stage was trained (``himed.trainers.sft``): a first pass asks for the
findings (``findings_prompt``), a second pass asks for the impression with the first answer as the assistant's
earlier turn (``impression_prompt``); the prediction is the two answers joined by a line break.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from himed.data.sections import DEFAULT_SECTIONS, extract_lenient, parse_strict, reference_text, validate_sections

logger = logging.getLogger(__name__)

SECTION_CHOICES = ("report", "findings", "impression")
CLEAN_CHOICES = ("mimic_cxr", "iu_xray", "none")
BACKENDS = ("hf", "vllm")
# The section tag in a completion that holds each reference section (sections.py names it "finding").
_SECTION_TAG = {"findings": "finding", "impression": "impression"}
# How many line numbers an error message lists before "and N more".
_MAX_LINES_SHOWN = 10


# ---------------------------------------------------------------------------------------------------------------
# Reading predictions


@dataclass(frozen=True)
class PredictionLine:
    """One prediction line: ``line`` is its 1-based line number in the file, for error messages."""

    line: int
    id: str | None
    prediction: str
    reference: str | None = None
    findings: str | None = None
    impression: str | None = None


class LineProblems:
    """Collects problems by kind, each with the line numbers it occurs on, and raises them as one ValueError."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._lines: dict[str, list[int]] = defaultdict(list)

    def add(self, problem: str, line: int) -> None:
        self._lines[problem].append(line)

    def raise_if_any(self) -> None:
        if not self._lines:
            return
        parts = []
        for problem, lines in self._lines.items():
            shown = ", ".join(str(n) for n in lines[:_MAX_LINES_SHOWN])
            more = f" and {len(lines) - _MAX_LINES_SHOWN} more" if len(lines) > _MAX_LINES_SHOWN else ""
            parts.append(f"line{'s' if len(lines) > 1 else ''} {shown}{more}: {problem}")
        raise ValueError(f"{self.source}: " + "; ".join(parts))


def _optional_text(record: Mapping, key: str, line: int, problems: LineProblems) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.add(f"{key!r} must be a string", line)
        return None
    return value


def _json_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if line.strip():  # blank lines are not records
                yield number, line


def read_predictions(
    path: str | Path, *, allow_empty: bool = False, need_references: bool = True
) -> list[PredictionLine]:
    """Validated prediction lines; every problem in the file is reported at once, naming its lines.

    ``allow_empty``: an empty ``prediction`` is a real output (a model that generated nothing) rather than an
    error. ``need_references``: every line must carry ``reference`` or ``findings`` (False when the references
    come from ``--data``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions file not found")
    problems = LineProblems(str(path))
    out: list[PredictionLine] = []
    first_line_of_id: dict[str, int] = {}
    with_id, without_id = [], []
    for number, text in _json_lines(path):
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            problems.add(f"not valid JSON ({error.msg})", number)
            continue
        if not isinstance(record, dict):
            problems.add("not a JSON object", number)
            continue
        prediction = record.get("prediction")
        if prediction is None:
            problems.add("no 'prediction' key", number)
            continue
        if not isinstance(prediction, str):
            problems.add("'prediction' must be a string", number)
            continue
        if not prediction.strip() and not allow_empty:
            problems.add(
                "'prediction' is empty (pass --allow-empty-predictions to score it as an empty report)", number
            )
        reference = _optional_text(record, "reference", number, problems)
        findings = _optional_text(record, "findings", number, problems)
        impression = _optional_text(record, "impression", number, problems)
        if need_references and not (reference or "").strip() and not (findings or "").strip():
            problems.add("no reference: 'reference' (or 'findings') is missing or empty", number)
        row_id = record.get("id")
        if row_id is not None:
            if isinstance(row_id, bool) or not isinstance(row_id, (str, int)):
                problems.add("'id' must be a string or an integer", number)
                continue
            row_id = str(row_id)
            if row_id in first_line_of_id:
                problems.add(f"duplicate id {row_id!r} (first on line {first_line_of_id[row_id]})", number)
            else:
                first_line_of_id[row_id] = number
            with_id.append(number)
        else:
            without_id.append(number)
        out.append(PredictionLine(number, row_id, prediction, reference, findings, impression))
    if with_id and without_id:
        for number in without_id:
            problems.add(f"no 'id' while {len(with_id)} other lines have one (give every line an id, or none)", number)
    problems.raise_if_any()
    if not out:
        raise ValueError(f"{path}: no prediction lines")
    return out


def attach_references(lines: Sequence[PredictionLine], rows: Sequence[Mapping], source: str) -> list[PredictionLine]:
    """Take each line's reference from the dataset row with the same id; ids must match one to one."""
    problems = LineProblems(source)
    by_id = {str(row["id"]): row for row in rows}
    out = []
    for line in lines:
        if line.id is None:
            problems.add("no 'id': references from --data are matched by id", line.line)
        elif line.id not in by_id:
            problems.add("id not in the dataset split (mismatched ids)", line.line)
        else:
            row = by_id[line.id]
            findings, impression = row.get("findings") or "", row.get("impression") or ""
            out.append(
                PredictionLine(
                    line.line,
                    line.id,
                    line.prediction,
                    reference_text(findings, impression),
                    findings or None,
                    impression or None,
                )
            )
    problems.raise_if_any()
    missing = sorted(set(by_id) - {line.id for line in lines})
    if missing:
        shown = ", ".join(repr(i) for i in missing[:_MAX_LINES_SHOWN])
        more = f" and {len(missing) - _MAX_LINES_SHOWN} more" if len(missing) > _MAX_LINES_SHOWN else ""
        raise ValueError(f"{source}: {len(missing)} studies of the dataset split have no prediction: {shown}{more}")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Texts to score


def _line_reference(line: PredictionLine) -> str:
    if (line.reference or "").strip():
        return line.reference
    return reference_text(line.findings or "", line.impression or "")


def section_pairs(
    lines: Sequence[PredictionLine], section: str, sections: Sequence[str]
) -> tuple[list[PredictionLine], list[str], list[str], list[int]]:
    """(kept lines, prediction texts, reference texts, excluded line numbers) for ``section`` (module docstring)."""
    if section not in SECTION_CHOICES:
        raise ValueError(f"unknown section {section!r}; choose one of {', '.join(SECTION_CHOICES)}")
    sections = validate_sections(sections)
    kept, predictions, references, excluded = [], [], [], []
    if section == "report":
        for line in lines:
            kept.append(line)
            predictions.append(extract_lenient(line.prediction, sections))
            references.append(_line_reference(line))
        return kept, predictions, references, excluded
    tag = _SECTION_TAG[section]
    if tag not in sections:
        raise ValueError(f"--section {section} needs the completion sections to include {tag!r}: {list(sections)}")
    for line in lines:
        reference = getattr(line, section)
        if not (reference or "").strip():
            excluded.append(line.line)
            continue
        parsed = parse_strict(line.prediction, sections)
        kept.append(line)
        predictions.append(parsed[tag] if parsed is not None else "")
        references.append(reference)
    if not kept:
        raise ValueError(f"--section {section}: no line has a reference {section!r} key with text")
    return kept, predictions, references, excluded


# ---------------------------------------------------------------------------------------------------------------
# Scoring


def _run_in_thread(function, *args, **kwargs) -> tuple[threading.Thread, dict]:
    """Start ``function`` in a thread; the dict gets ``result`` or ``error``. The NLG metrics run this way so the
    METEOR jar (a separate process) works while this process labels reports."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = function(*args, **kwargs)
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def score_lines(
    lines: Sequence[PredictionLine],
    *,
    clean: str = "mimic_cxr",
    section: str = "report",
    sections: Sequence[str] = DEFAULT_SECTIONS,
    labeler: str = "rules",
    labeler_kwargs: Mapping[str, Any] | None = None,
    uncertain: str = "positive",
    meteor: str = "auto",
    radgraph: Mapping[str, Any] | None = None,
) -> tuple[dict[str, float], dict[str, Any], int]:
    """All metrics for validated lines: (metrics, config, n scored pairs). See the module docstring.

    ``radgraph``: keyword arguments of ``himed.clinical.radgraph.get_radgraph_bridge`` (``python``, ``model_type``,
    ``model_cache_dir``, ...); RadGraph F1 is computed only when it is given.
    """
    from himed.clinical.labelers import get_labeler
    from himed.clinical.severity import severity_metrics
    from himed.data.normalize import clean_report
    from himed.metrics.clinical_efficacy import clinical_efficacy
    from himed.metrics.nlg import coco_text, nlg_metrics
    from himed.rewards.consistency import OBSERVATION_SETS, count_clashes

    if clean not in CLEAN_CHOICES:
        raise ValueError(f"unknown cleaning {clean!r}; choose one of {', '.join(CLEAN_CHOICES)}")
    sections = validate_sections(sections)
    kept, predictions, references, excluded = section_pairs(lines, section, sections)
    n = len(kept)
    cleaned_predictions = [clean_report(text, style=clean) for text in predictions]
    cleaned_references = [clean_report(text, style=clean) for text in references]
    nlg_thread, nlg_box = _run_in_thread(nlg_metrics, cleaned_predictions, cleaned_references, meteor=meteor)
    radgraph_thread = radgraph_box = None
    if radgraph is not None:
        from himed.clinical.radgraph import get_radgraph_bridge

        # RadGraph reads report text as written (like the labelers), in its own process, alongside the rest.
        bridge = get_radgraph_bridge(**dict(radgraph))
        radgraph_thread, radgraph_box = _run_in_thread(bridge.f1, predictions, references)

    metrics: dict[str, float] = {}
    undefined: dict[str, str] = {}
    labeler_object = get_labeler(labeler, **dict(labeler_kwargs or {}))
    parsed = [parse_strict(line.prediction, sections) for line in kept]
    with_impression = [p for p in parsed if p is not None and "impression" in p]
    labels = labeler_object.label(
        [
            *predictions,
            *references,
            *(p["finding"] for p in with_impression),
            *(p["impression"] for p in with_impression),
        ]
    )
    predicted_labels, reference_labels = labels[:n], labels[n : 2 * n]
    metrics.update(clinical_efficacy(predicted_labels, reference_labels, uncertain=uncertain))

    severity = severity_metrics(predictions, references)
    metrics.update(severity)
    for name in ("severity_pearson", "severity_spearman"):
        if name not in severity:
            undefined[name] = "the predictions' or the references' severity is constant"

    metrics["format_rate"] = sum(p is not None for p in parsed) / n
    if with_impression:
        finding_labels = labels[2 * n : 2 * n + len(with_impression)]
        impression_labels = labels[2 * n + len(with_impression) :]
        consistent = sum(
            count_clashes(f, i, OBSERVATION_SETS["all"])[0] == 0
            for f, i in zip(finding_labels, impression_labels, strict=True)
        )
        metrics["consistency_rate"] = consistent / len(with_impression)
    else:
        undefined["consistency_rate"] = (
            "no prediction has both sections in the strict format"
            if "impression" in sections
            else "the completion sections have no impression"
        )
    metrics["length_mean"] = float(np.mean([len(coco_text(t).split()) for t in cleaned_predictions]))
    metrics["length_mean_reference"] = float(np.mean([len(coco_text(t).split()) for t in cleaned_references]))

    nlg_thread.join()
    if "error" in nlg_box:
        raise nlg_box["error"]
    nlg_values, nlg_info = nlg_box["result"]
    metrics = {**nlg_values, **metrics}
    radgraph_info: dict[str, Any] = {}
    if radgraph_thread is not None:
        radgraph_thread.join()
        if "error" in radgraph_box:
            raise radgraph_box["error"]
        mean, per_pair = radgraph_box["result"]
        unscored = sum(score is None for score in per_pair)
        if unscored == len(per_pair):
            undefined["radgraph_f1"] = "RadGraph could not annotate any pair"
        else:
            for level in ("simple", "partial", "complete"):
                metrics[f"radgraph_f1_{level}"] = float(getattr(mean, level))
        radgraph_info = {
            "radgraph": {"model_type": dict(radgraph).get("model_type", "radgraph-xl"), "unscored_pairs": unscored}
        }

    config: dict[str, Any] = {
        "clean": clean,
        "section": section,
        "sections": list(sections),
        "labeler": labeler,
        "uncertain": uncertain,
        **nlg_info,
        **radgraph_info,
        "format_valid": sum(p is not None for p in parsed),
        "consistency_scored": len(with_impression),
    }
    if section != "report":
        config["section_missing"] = sum(p is None for p in parsed)
    if excluded:
        config["excluded"] = {"count": len(excluded), "lines": excluded[:100]}
        logger.warning("%d lines have no reference %s and are left out", len(excluded), section)
    if undefined:
        config["undefined"] = undefined
    return metrics, config, n


# ---------------------------------------------------------------------------------------------------------------
# Writing metrics.json and metrics.md


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("himed", "pycocoevalcap"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    return out


def format_value(value: float) -> str:
    """How metrics.md shows a number: 4 decimals (metrics.json keeps full precision)."""
    return f"{value:.4f}"


def metrics_markdown(result: Mapping[str, Any]) -> str:
    """metrics.md from the metrics.json dict, so the two cannot disagree."""
    config = result["config"]
    lines = [
        "# Evaluation",
        "",
        f"n = {result['n']} report pairs; section `{config.get('section')}`; cleaning `{config.get('clean')}`; "
        f"METEOR: {config.get('meteor')}; labeler `{config.get('labeler')}` (uncertain counted "
        f"{config.get('uncertain')}).",
        "",
        "| metric | value |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {format_value(value)} |" for name, value in result["metrics"].items()]
    cleaning = (
        "the text as given (whitespace collapsed; --clean none: not R2Gen's cleaning)"
        if config.get("clean") == "none"
        else f"text cleaned by R2Gen's `{config.get('clean')}` rule"
    )
    lines += [
        "",
        f"How these compare with published tables: BLEU, METEOR, ROUGE-L and CIDEr are corpus-level pycocoevalcap 1.2 "
        f"numbers on {cleaning} (no PTB tokenizer, no reference truncation, no <unk> mapping); CIDEr's IDF comes "
        "from these references, so it depends on the test set.",
    ]
    if "meteor_nltk" in result["metrics"]:
        lines += ["", "meteor_nltk is nltk's METEOR, not the METEOR 1.5 jar: not comparable with papers' METEOR."]
    if config.get("labeler") == "rules":
        lines += [
            "",
            "Clinical efficacy uses himed's rule labeler; papers label with the CheXpert labeler or CheXbert, so "
            "ce_* numbers are comparable with theirs only when re-run with --labeler chexbert.",
        ]
    for name, reason in config.get("undefined", {}).items():
        lines.append(f"\n{name}: not defined for this set ({reason}).")
    lines += ["", "Configuration:", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def write_metrics(out_dir: str | Path, metrics: Mapping[str, float], config: Mapping[str, Any], n: int) -> Path:
    """Write DIR/metrics.json and DIR/metrics.md; returns the JSON path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"metrics": dict(metrics), "config": {**config, "versions": _versions()}, "n": n}
    path = out_dir / "metrics.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out_dir / "metrics.md").write_text(metrics_markdown(result), encoding="utf-8")
    return path


def evaluate_predictions_file(
    predictions: str | Path,
    out_dir: str | Path,
    *,
    rows: Sequence[Mapping] | None = None,
    allow_empty: bool = False,
    extra_config: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Read, score and write; ``rows``: dataset rows supplying references by id. Returns the metrics.json dict."""
    lines = read_predictions(predictions, allow_empty=allow_empty, need_references=rows is None)
    if rows is not None:
        lines = attach_references(lines, rows, str(predictions))
    metrics, config, n = score_lines(lines, **options)
    config = {"predictions": str(predictions), **dict(extra_config or {}), **config}
    path = write_metrics(out_dir, metrics, config, n)
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------------------------
# Generating predictions from a model


@dataclass
class GenerationSettings:
    """What decides the generated text; recorded in DIR/generation.json and checked when a run resumes."""

    model: str
    data: str
    data_format: str
    split: str
    sections: list[str]
    max_new_tokens: int = 256
    backend: str = "hf"
    hierarchical: bool = False

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        if not self.hierarchical:  # runs recorded before the flag existed resume unchanged
            del out["hierarchical"]
        return out


def read_done_ids(path: Path, known_ids: set[str]) -> set[str]:
    """Ids already in a predictions file being resumed. A last line cut off mid-write (an interrupted run) is
    dropped from the file; any other bad line, or an id not in the dataset split, is an error naming its line."""
    if not path.exists():
        return set()
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        cut = text.rfind("\n") + 1
        logger.warning("%s: dropping an incomplete last line left by an interrupted run", path)
        path.write_text(text[:cut], encoding="utf-8")
    problems = LineProblems(str(path))
    done: dict[str, int] = {}
    for number, line in _json_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            problems.add(f"not valid JSON ({error.msg})", number)
            continue
        row_id = str(record.get("id")) if isinstance(record, dict) and record.get("id") is not None else None
        if row_id is None:
            problems.add("no 'id' (a resumable predictions file has one per line)", number)
        elif row_id in done:
            problems.add(f"duplicate id {row_id!r} (first on line {done[row_id]})", number)
        elif row_id not in known_ids:
            problems.add("id not in the dataset split (mismatched ids: was the file made from other data?)", number)
        else:
            done[row_id] = number
    problems.raise_if_any()
    return set(done)


def _check_settings(out_dir: Path, settings: GenerationSettings, resuming: bool) -> None:
    path = out_dir / "generation.json"
    wanted = settings.as_dict()
    if path.exists() and resuming:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        # The backend may change between runs (greedy decoding gives the same text up to numerics).
        differ = sorted(k for k in wanted if k != "backend" and recorded.get(k) != wanted[k])
        if differ:
            details = ", ".join(f"{k}: {recorded.get(k)!r} -> {wanted[k]!r}" for k in differ)
            raise ValueError(
                f"{out_dir / 'predictions.jsonl'} was generated with other settings ({details}); "
                "use another --out-dir or delete the file"
            )
    path.write_text(json.dumps(wanted, indent=2) + "\n", encoding="utf-8")


def _pil_images(row: Mapping) -> list:
    from PIL import Image

    images = []
    for image in row["images"]:
        if isinstance(image, Image.Image):
            images.append(image.convert("RGB"))
        else:
            with Image.open(image) as opened:
                images.append(opened.convert("RGB"))
    return images


class HFGenerator:
    """Greedy batched generation with ``model.generate`` (left padding, so every prompt ends where decoding starts)."""

    def __init__(self, model_path: str, *, device: str = "auto", dtype: str | None = None) -> None:
        import torch

        from himed.models.loading import load_policy, load_processor

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.processor = load_processor(model_path)
        self.processor.tokenizer.padding_side = "left"
        self.model = load_policy(model_path, dtype=dtype).to(device).eval()

    def generate(self, prompts: Sequence[list[dict]], images: Sequence[list], max_new_tokens: int) -> list[str]:
        import torch

        texts = [self.processor.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
        flat_images = [image for study in images for image in study]
        inputs = self.processor(text=texts, images=flat_images or None, padding=True, return_tensors="pt")
        inputs = inputs.to(self.device)
        tokenizer = self.processor.tokenizer
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


class VLLMGenerator:
    """Greedy generation with vLLM's offline ``LLM`` (GPU only)."""

    def __init__(self, model_path: str, *, max_images: int, dtype: str | None = None) -> None:
        try:
            from vllm import LLM
        except ImportError as error:
            raise ValueError(
                "--backend vllm needs the vllm package (GPU machines: pip install 'himed[vllm]'); "
                f"it could not be imported: {error}"
            ) from None
        from himed.models.loading import load_processor

        self.processor = load_processor(model_path)
        self.llm = LLM(model=model_path, dtype=dtype or "auto", limit_mm_per_prompt={"image": max(1, max_images)})

    def generate(self, prompts: Sequence[list[dict]], images: Sequence[list], max_new_tokens: int) -> list[str]:
        from vllm import SamplingParams

        requests = [
            {
                "prompt": self.processor.apply_chat_template(p, add_generation_prompt=True, tokenize=False),
                "multi_modal_data": {"image": study},
            }
            for p, study in zip(prompts, images, strict=True)
        ]
        outputs = self.llm.generate(requests, SamplingParams(temperature=0.0, max_tokens=max_new_tokens))
        return [output.outputs[0].text.strip() for output in outputs]


def generate_hierarchical(generator: Any, rows: Sequence[Mapping], sections: Sequence[str], max_new_tokens: int):
    """Hi-MrGn's two-pass decoding: the findings, then the impression conditioned on the images and the findings.

    ``max_new_tokens`` bounds each pass. Returns one prediction per row: the findings answer, a line break, and the
    impression answer (the tagged completion the hierarchical stage's two targets join to).
    """
    from himed.data.prompts import findings_prompt, impression_prompt

    images = [_pil_images(row) for row in rows]
    first = [findings_prompt(row, sections=sections) for row in rows]
    findings = generator.generate(first, images, max_new_tokens)
    second = [impression_prompt(prompt, answer) for prompt, answer in zip(first, findings, strict=True)]
    impressions = generator.generate(second, images, max_new_tokens)
    return [f"{answer}\n{impression}" for answer, impression in zip(findings, impressions, strict=True)]


def generate_predictions(
    rows: Sequence[Mapping],
    out_dir: str | Path,
    settings: GenerationSettings,
    *,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str | None = None,
    generator: Any = None,
) -> Path:
    """Append a prediction line for every row not yet in DIR/predictions.jsonl; returns its path.

    ``generator``: an object with ``generate(prompts, images, max_new_tokens) -> list[str]`` (default: the
    backend's generator, built only when something is left to generate).
    """
    from tqdm import tqdm

    from himed.data.prompts import build_prompt, hierarchical_sections

    if settings.hierarchical:
        hierarchical_sections(settings.sections)  # needs the impression section: fail before loading a model
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if settings.backend not in BACKENDS:
        raise ValueError(f"unknown backend {settings.backend!r}; choose one of {', '.join(BACKENDS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "predictions.jsonl"
    ids = [str(row["id"]) for row in rows]
    done = read_done_ids(path, set(ids))
    _check_settings(out_dir, settings, resuming=bool(done))
    todo = [row for row in rows if str(row["id"]) not in done]
    if done:
        logger.info("%s: %d of %d predictions already there; generating %d", path, len(done), len(rows), len(todo))
    if not todo:
        return path
    if generator is None:
        if settings.backend == "vllm":
            generator = VLLMGenerator(settings.model, max_images=max(len(r["images"]) for r in todo), dtype=dtype)
        else:
            generator = HFGenerator(settings.model, device=device, dtype=dtype)
    with path.open("a", encoding="utf-8") as file, tqdm(total=len(todo), desc="generating", unit="report") as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            if settings.hierarchical:
                texts = generate_hierarchical(generator, batch, settings.sections, settings.max_new_tokens)
            else:
                prompts = [build_prompt(row, sections=settings.sections) for row in batch]
                texts = generator.generate(prompts, [_pil_images(row) for row in batch], settings.max_new_tokens)
            for row, text in zip(batch, texts, strict=True):
                findings, impression = row.get("findings") or "", row.get("impression") or ""
                record = {
                    "id": str(row["id"]),
                    "prediction": text,
                    "reference": reference_text(findings, impression),
                    "findings": findings,
                    "impression": impression,
                }
                # One write per line and a flush per batch: an interruption loses at most the batch in flight.
                file.write(json.dumps(record) + "\n")
            file.flush()
            bar.update(len(batch))
    return path
