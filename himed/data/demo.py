"""Procedural demo data: chest-X-ray-like drawings with CheXpert-style labels and templated reports.

The embedded default data of the quickstart and the tests: 1,500 studies generate in ~16 s of CPU time (~10 MB),
drawn clearly enough that a tiny vision-language model (16 visual tokens per 112x112 image) can visibly learn it.

What a study is
    A frontal view (PA, or AP for most studies with a support device) and, for ``lateral_rate`` of the studies, a
    LATERAL view. Each observation below is present independently with the probability in ``PREVALENCE``; a present
    observation is drawn where a radiologist would look for it:

    - Cardiomegaly: a wider heart silhouette (mild / moderate / severe).
    - Pleural Effusion: fluid filling the base of the left, right or both lungs with a meniscus that rises
      laterally, blunting the costophrenic angle (small / moderate / large).
    - Consolidation: patchy dense opacity in one lobe-like zone (right/left, upper/lower lobe).
    - Edema: bilateral perihilar haze and short horizontal septal (Kerley) lines (mild / moderate / severe).
    - Atelectasis: a thin plate-like band above the left, right or both bases.
    - Pneumothorax: at the apex of one lung, a dark rim with no lung markings outside a bright pleural edge
      (small / moderate / large).
    - Support Devices: bright lines: endotracheal tube, right internal jugular central line, enteric tube, or a
      left chest pacemaker with its lead.

    A fraction (``UNCERTAIN_RATE``) of present findings are drawn faintly and reported with hedged words
    ("possible", "may represent", "cannot be excluded"): label -1. Pneumonia is an interpretation, never drawn:
    consolidations are sometimes called "consistent with pneumonia" (1) or "may represent pneumonia" (-1).

Image conventions
    Radiographic: the patient's right is on the image's left. Grayscale ``L`` PNGs, ``image_size`` square
    (112 by default: a Qwen2.5-VL vision tower with patch 14 and a 2x2 merge sees 16 visual tokens).

Labels are image truth; report text may omit
    A row's ``labels`` follow DESIGN.md section 2: ``1``/``-1`` for every drawn finding, ``0`` for an absent finding
    the report mentions negatively ("No pleural effusion."), absent keys for unmentioned absent findings, and
    No Finding by :func:`himed.clinical.observations.with_no_finding`. Pneumonia (an interpretation of a
    consolidation) and Fracture ("No displaced rib fracture.") appear only when the text mentions them; "The lungs
    are clear." carries no label. With the default ``omit_rate`` 0 the labels agree with the text exactly, and the
    rule labeler (``himed.clinical.rules``) reads them back from the report (tested).

    With ``omit_rate`` > 0, each drawn observation (devices included) is left out of the report text with that
    probability while ``labels`` keep it: noisy references, on which SFT plateaus and a reward that reads the labels
    can still teach the finding (notes/ENVIRONMENT.md). Only the ``omit_splits`` rows (default: train) are thinned,
    so val/test references stay complete. ``meta.json`` records this.

Output of :func:`generate_demo` (R2Gen layout, DESIGN.md section 2)::

    DIR/annotation.json   {"train"|"val"|"test": [{"id", "report", "image_path", "split", "findings",
                          "impression", "labels", "views", ["indication"]}]}
    DIR/images/<id>/<view>.png   image_path entries are relative to DIR/images/
    DIR/meta.json         n, seed, omit_rate, image_size, generator version, prevalences, split counts

Everything is a pure function of ``(seed, study index)``: the same arguments give byte-identical files, and
:func:`report_corpus` returns the same report texts as :func:`generate_demo` without drawing any image.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from himed.clinical.observations import CHEXBERT_OBSERVATIONS, SUPPORT_DEVICES, with_no_finding

# meta.json names the generator; --overwrite only ever deletes a directory whose meta.json says it wrote it.
GENERATOR = "himed.data.demo"
# Bump when a change alters generated files for the same arguments (meta.json records it).
GENERATOR_VERSION = "1"

CARDIOMEGALY = "Cardiomegaly"
EFFUSION = "Pleural Effusion"
CONSOLIDATION = "Consolidation"
EDEMA = "Edema"
ATELECTASIS = "Atelectasis"
PNEUMOTHORAX = "Pneumothorax"
PNEUMONIA = "Pneumonia"
FRACTURE = "Fracture"

# Drawn observations and their independent prevalence. All five CE-5 observations are here so clinical-efficacy
# numbers on the demo mean something; ~25-30% each keeps negatives common and leaves ~16% No Finding studies.
PREVALENCE: dict[str, float] = {
    CARDIOMEGALY: 0.30,
    EFFUSION: 0.30,
    CONSOLIDATION: 0.25,
    EDEMA: 0.25,
    ATELECTASIS: 0.25,
    PNEUMOTHORAX: 0.20,
    SUPPORT_DEVICES: 0.30,
}
DRAWN_OBSERVATIONS = tuple(PREVALENCE)
# Present findings (not devices) drawn faintly and reported with hedged words (label -1).
UNCERTAIN_RATE = 0.12
# An absent finding is mentioned negatively with this probability (label 0), otherwise left unmentioned.
NEGATIVE_MENTION_RATE = 0.45
LATERAL_RATE = 0.20
# Length limits keeping reports near 30-60 tokens: positive + negative sentences, and impression items.
MAX_REPORT_ITEMS = 5
MAX_IMPRESSION_ITEMS = 3
SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
# Splits whose report text omit_rate thins by default: only the training references are noisy, so evaluation
# against val/test references measures the truth (the setting of notes/ENVIRONMENT.md's SFT-then-GRPO experiment).
OMIT_SPLITS = ("train",)
MIN_IMAGE_SIZE = 56

SIDES = ("left", "right")
DEVICE_KINDS = ("endotracheal tube", "central line", "enteric tube", "pacemaker")
SEVERITIES: dict[str, tuple[str, ...]] = {
    CARDIOMEGALY: ("mild", "moderate", "severe"),
    EFFUSION: ("small", "moderate", "large"),
    EDEMA: ("mild", "moderate", "severe"),
    ATELECTASIS: ("minimal", "mild"),
    PNEUMOTHORAX: ("small", "moderate", "large"),
}
INDICATIONS = (
    "Shortness of breath.",
    "Cough and fever.",
    "Chest pain.",
    "Follow-up.",
    "Preoperative evaluation.",
    "Dyspnea.",
    "Hypoxia.",
    "Weakness.",
)
INDICATION_RATE = 0.3


@dataclass(frozen=True)
class ImageFinding:
    """One drawn observation: what the image shows, independent of whether the report mentions it.

    ``certainty`` is 1 (drawn clearly) or -1 (drawn faintly, reported with hedging). ``side`` is ``left``,
    ``right`` or ``bilateral`` (the patient's side) where laterality applies; ``zone`` is ``upper``/``lower`` for a
    consolidation; ``device`` names the support device kind.
    """

    observation: str
    certainty: int = 1
    side: str | None = None
    severity: str | None = None
    zone: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class DemoStudy:
    """A sampled study: what is drawn (``image_findings``) and what its report says."""

    index: int
    image_findings: tuple[ImageFinding, ...]
    views: tuple[str, ...]
    findings: str
    impression: str
    labels: dict[str, int] = field(hash=False)
    omitted: tuple[str, ...] = ()
    indication: str | None = None

    @property
    def report(self) -> str:
        return f"{self.findings} {self.impression}" if self.impression else self.findings


# ----------------------------------------------------------------------------------------------------------------
# Sampling what a study shows
# ----------------------------------------------------------------------------------------------------------------


def _study_random(seed: int, index: int) -> random.Random:
    # String seeds hash with SHA-512 in Python's random (version 2): stable across runs and platforms.
    return random.Random(f"himed-demo/{seed}/{index}")


def sample_image_findings(rng: random.Random) -> tuple[ImageFinding, ...]:
    """Draw the present findings of one study: independent observations, each with side and severity."""
    found: list[ImageFinding] = []
    for observation in DRAWN_OBSERVATIONS:
        if rng.random() >= PREVALENCE[observation]:
            continue
        if observation == SUPPORT_DEVICES:
            kinds = rng.sample(DEVICE_KINDS, 2 if rng.random() < 0.25 else 1)
            found.extend(ImageFinding(SUPPORT_DEVICES, device=kind) for kind in sorted(kinds, key=DEVICE_KINDS.index))
            continue
        certainty = -1 if rng.random() < UNCERTAIN_RATE else 1
        severities = SEVERITIES.get(observation)
        # Hedged findings are the subtle ones: smallest grade.
        severity = None if severities is None else (severities[0] if certainty == -1 else rng.choice(severities))
        side = zone = None
        if observation in (EFFUSION, ATELECTASIS):
            side = rng.choice(("left", "right", "bilateral")) if certainty == 1 else rng.choice(SIDES)
        elif observation in (CONSOLIDATION, PNEUMOTHORAX):
            side = rng.choice(SIDES)
        elif observation == EDEMA:
            side = "bilateral"
        if observation == CONSOLIDATION:
            zone = rng.choice(("upper", "lower"))
        found.append(ImageFinding(observation, certainty, side, severity, zone))
    return tuple(found)


# ----------------------------------------------------------------------------------------------------------------
# Writing the report (pure: text from findings and a random generator)
# ----------------------------------------------------------------------------------------------------------------

_ADVERB = {"mild": "mildly", "moderate": "moderately", "severe": "severely"}


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lobe(finding: ImageFinding) -> str:
    return f"{finding.side} {finding.zone} lobe"


def _positive_sentence(finding: ImageFinding, rng: random.Random) -> str:
    """A findings-section sentence for a drawn finding, hedged when its certainty is -1."""
    obs, side, sev = finding.observation, finding.side, finding.severity
    hedged = finding.certainty == -1
    if obs == CARDIOMEGALY:
        if hedged:
            options = [
                "Possible mild cardiomegaly.",
                "Borderline heart size, possibly mild cardiomegaly.",
                "The cardiac silhouette may be mildly enlarged.",
            ]
        else:
            options = [
                f"The heart is {_ADVERB[sev]} enlarged.",
                f"{_cap(sev)} cardiomegaly.",
                f"There is {sev} cardiomegaly.",
                f"The cardiac silhouette is {_ADVERB[sev]} enlarged.",
                f"{_cap(sev)} enlargement of the cardiac silhouette.",
            ]
    elif obs == EFFUSION:
        if hedged:
            options = [
                f"Possible small {side} pleural effusion.",
                f"There may be a small {side} pleural effusion.",
                f"A small {side} pleural effusion cannot be excluded.",
            ]
        elif side == "bilateral":
            options = [
                f"There are {sev} bilateral pleural effusions.",
                f"{_cap(sev)} bilateral pleural effusions.",
                f"Blunting of both costophrenic angles consistent with {sev} effusions.",
            ]
        else:
            options = [
                f"There is a {sev} {side} pleural effusion.",
                f"{_cap(sev)} {side} pleural effusion.",
                f"Blunting of the {side} costophrenic angle consistent with a {sev} effusion.",
                f"A {sev} {side} pleural effusion is present.",
            ]
    elif obs == CONSOLIDATION:
        lobe = _lobe(finding)
        if hedged:
            options = [f"Possible consolidation in the {lobe}.", f"Subtle {lobe} consolidation cannot be excluded."]
        else:
            options = [
                f"There is consolidation in the {lobe}.",
                f"Patchy consolidation in the {lobe}.",
                f"Focal airspace consolidation in the {lobe}.",
                f"{_cap(lobe)} consolidation is noted.",
            ]
    elif obs == EDEMA:
        if hedged:
            options = [
                "Possible mild interstitial edema.",
                "Perihilar vessels are mildly indistinct, early edema cannot be excluded.",
                "Indistinct perihilar vessels may represent mild edema.",
            ]
        else:
            options = [
                f"{_cap(sev)} pulmonary edema.",
                f"There is {sev} interstitial pulmonary edema.",
                f"Indistinct perihilar vessels consistent with {sev} pulmonary edema.",
                f"{_cap(sev)} interstitial edema with septal thickening.",
            ]
    elif obs == ATELECTASIS:
        if hedged:
            options = [
                f"A thin band at the {side} base may represent atelectasis.",
                f"Possible {side} basilar atelectasis.",
            ]
        elif side == "bilateral":
            options = [
                f"{_cap(sev)} bibasilar atelectasis.",
                "Plate-like atelectasis at both bases.",
                "Linear atelectasis in both lower lungs.",
            ]
        else:
            options = [
                f"{_cap(sev)} plate-like atelectasis at the {side} base.",
                f"Linear atelectasis in the {side} lower lung.",
                f"{_cap(side)} basilar atelectasis.",
            ]
    elif obs == PNEUMOTHORAX:
        if hedged:
            options = [
                f"Possible small {side} apical pneumothorax.",
                f"A tiny {side} apical pneumothorax cannot be excluded.",
            ]
        else:
            options = [
                f"There is a {sev} {side} pneumothorax.",
                f"{_cap(sev)} {side} apical pneumothorax.",
                f"A {sev} {side} pneumothorax with a visible pleural edge at the apex.",
            ]
    elif obs == SUPPORT_DEVICES:
        options = {
            "endotracheal tube": [
                f"An endotracheal tube terminates {rng.choice((3, 4, 5))} cm above the carina.",
                "Endotracheal tube in standard position.",
            ],
            "central line": [
                "A right internal jugular central line ends in the SVC.",
                "Right IJ central venous catheter with tip in the SVC.",
            ],
            "enteric tube": [
                "An enteric tube courses below the diaphragm.",
                "Nasogastric tube tip in the stomach.",
            ],
            "pacemaker": [
                "A left chest wall pacemaker with a lead in the right ventricle.",
                "Left-sided pacemaker in place.",
            ],
        }[finding.device]
    else:
        raise ValueError(f"no report template for {obs!r}")
    return rng.choice(options)


def _impression_phrase(finding: ImageFinding, pneumonia: int | None) -> str:
    """A short impression item for a drawn, mentioned finding (no final period)."""
    obs, side, sev = finding.observation, finding.side, finding.severity
    hedged = finding.certainty == -1
    if obs == CARDIOMEGALY:
        return "possible cardiomegaly" if hedged else f"{sev} cardiomegaly"
    if obs == EFFUSION:
        if hedged:
            return f"possible small {side} pleural effusion"
        return f"{sev} bilateral pleural effusions" if side == "bilateral" else f"{sev} {side} pleural effusion"
    if obs == CONSOLIDATION:
        text = f"possible {_lobe(finding)} consolidation" if hedged else f"{_lobe(finding)} consolidation"
        if pneumonia == 1:
            text += ", consistent with pneumonia"
        elif pneumonia == -1:
            text += ", which may represent pneumonia"
        return text
    if obs == EDEMA:
        return "possible mild pulmonary edema" if hedged else f"{sev} pulmonary edema"
    if obs == ATELECTASIS:
        if hedged:
            return f"possible {side} basilar atelectasis"
        return "bibasilar atelectasis" if side == "bilateral" else f"{side} basilar atelectasis"
    if obs == PNEUMOTHORAX:
        return f"possible small {side} pneumothorax" if hedged else f"{sev} {side} pneumothorax"
    raise ValueError(f"no impression phrase for {obs!r}")


_NORMAL_IMPRESSIONS = (
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "No acute cardiopulmonary disease.",
    "Normal chest radiograph.",
)
_NEGATIVE_SENTENCES: dict[str, tuple[str, ...]] = {
    CARDIOMEGALY: (
        "The heart size is normal.",
        "Heart size is within normal limits.",
        "No cardiomegaly.",
        "Normal heart size.",
    ),
    EFFUSION: ("No pleural effusion.", "There is no pleural effusion."),
    CONSOLIDATION: ("No focal consolidation.", "There is no focal consolidation."),
    EDEMA: ("No pulmonary edema.", "There is no pulmonary edema."),
    ATELECTASIS: ("No atelectasis.",),
    PNEUMOTHORAX: ("No pneumothorax.", "There is no pneumothorax."),
}
# Pairs reported together when both are negative, as radiologists do ("No pleural effusion or pneumothorax.").
_NEGATIVE_PAIRS: dict[tuple[str, str], tuple[str, ...]] = {
    (EFFUSION, PNEUMOTHORAX): ("No pleural effusion or pneumothorax.", "There is no pleural effusion or pneumothorax."),
    (CONSOLIDATION, EDEMA): ("No focal consolidation or pulmonary edema.",),
}
_SECTION_ORDER = {
    SUPPORT_DEVICES: 0,
    CARDIOMEGALY: 1,
    CONSOLIDATION: 2,
    EDEMA: 2,
    ATELECTASIS: 2,
    EFFUSION: 3,
    PNEUMOTHORAX: 3,
}
_LUNG_OBSERVATIONS = (CONSOLIDATION, EDEMA, ATELECTASIS)


def write_report(
    image_findings: Sequence[ImageFinding], rng: random.Random, omit_rate: float = 0.0
) -> tuple[str, str, dict[str, int], tuple[str, ...]]:
    """The report of a study and its labels: ``(findings, impression, labels, omitted observations)``.

    Findings read devices, heart, lungs, pleura, bones; the impression lists the mentioned abnormalities (devices
    only sometimes) or a normal statement. ``labels`` follow the module docstring: drawn findings keep their
    certainty even when ``omit_rate`` drops them from the text.
    """
    present = {f.observation for f in image_findings}
    omitted = tuple(
        sorted(
            {f.observation for f in image_findings if rng.random() < omit_rate},
            key=DRAWN_OBSERVATIONS.index,
        )
    )
    mentioned = [f for f in image_findings if f.observation not in omitted]
    negatives = [
        obs
        for obs in DRAWN_OBSERVATIONS
        if obs != SUPPORT_DEVICES and obs not in present and rng.random() < NEGATIVE_MENTION_RATE
    ]
    # Reports stay within the tiny model's generation budget (64-96 tokens): the more there is to describe, the
    # fewer pertinent negatives.
    max_negatives = max(1, MAX_REPORT_ITEMS - len(mentioned))
    if len(negatives) > max_negatives:
        keep = set(rng.sample(negatives, max_negatives))
        negatives = [obs for obs in negatives if obs in keep]
    pneumonia: int | None = None
    if any(f.observation == CONSOLIDATION and f.certainty == 1 for f in mentioned):
        roll = rng.random()
        pneumonia = 1 if roll < 0.2 else -1 if roll < 0.55 else None

    # (order, sentence) so sentences group by anatomy whatever order they were chosen in.
    sentences: list[tuple[int, str]] = [(_SECTION_ORDER[f.observation], _positive_sentence(f, rng)) for f in mentioned]
    remaining = list(negatives)
    for pair, options in _NEGATIVE_PAIRS.items():
        if all(obs in remaining for obs in pair) and rng.random() < 0.7:
            sentences.append((_SECTION_ORDER[pair[0]], rng.choice(options)))
            remaining = [obs for obs in remaining if obs not in pair]
    sentences.extend((_SECTION_ORDER[obs], rng.choice(_NEGATIVE_SENTENCES[obs])) for obs in remaining)
    # "Lungs are clear" carries no label: it is said when the report mentions nothing in the lungs.
    if not any(f.observation in _LUNG_OBSERVATIONS for f in mentioned) and rng.random() < 0.5:
        sentences.append((2, rng.choice(("The lungs are clear.", "The lungs are well expanded and clear."))))
    fracture_negative = rng.random() < 0.15
    if fracture_negative:
        sentences.append((4, "No displaced rib fracture."))
    elif rng.random() < 0.2:
        sentences.append((4, "No acute osseous abnormality."))
    if not sentences:  # a findings section is never empty (DESIGN.md section 2 rejects empty references)
        sentences.append((2, rng.choice(("The lungs are clear.", "The lungs are well expanded and clear."))))
    sentences.sort(key=lambda item: item[0])  # stable: keeps the sampled order within a group
    findings = " ".join(sentence for _, sentence in sentences)

    abnormal = [f for f in mentioned if f.observation != SUPPORT_DEVICES]
    if abnormal:
        # The impression summarises at most MAX_IMPRESSION_ITEMS findings (the findings section has them all).
        phrases = [_impression_phrase(f, pneumonia) for f in abnormal[:MAX_IMPRESSION_ITEMS]]
        impression = " ".join(_cap(p) + "." for p in phrases)
    else:
        impression = rng.choice(_NORMAL_IMPRESSIONS)
        if not any(f.observation == CONSOLIDATION for f in image_findings) and rng.random() < 0.2:
            pneumonia = 0
            impression += " No evidence of pneumonia."
    devices = [f for f in mentioned if f.observation == SUPPORT_DEVICES]
    if devices and rng.random() < 0.3:
        impression = rng.choice(("Support devices as above.", "Lines and tubes as described.")) + " " + impression

    labels: dict[str, int] = {}
    for f in image_findings:
        labels[f.observation] = f.certainty
    for obs in negatives:
        labels[obs] = 0
    if pneumonia is not None:
        labels[PNEUMONIA] = pneumonia
    if fracture_negative:
        labels[FRACTURE] = 0
    labels = with_no_finding(labels)
    labels = {obs: labels[obs] for obs in CHEXBERT_OBSERVATIONS if obs in labels}
    return findings, impression, labels, omitted


def sample_study(index: int, seed: int = 0, omit_rate: float = 0.0, lateral_rate: float = LATERAL_RATE) -> DemoStudy:
    """Study ``index`` of the demo set with ``seed``: a pure function of its arguments."""
    rng = _study_random(seed, index)
    image_findings = sample_image_findings(rng)
    has_device = any(f.observation == SUPPORT_DEVICES for f in image_findings)
    # Portable (AP) films are the norm for patients with lines and tubes.
    frontal = "AP" if rng.random() < (0.8 if has_device else 0.25) else "PA"
    views = (frontal, "LATERAL") if rng.random() < lateral_rate else (frontal,)
    indication = rng.choice(INDICATIONS) if rng.random() < INDICATION_RATE else None
    # The text random stream is separate so that changing a template list does not move the drawn findings.
    text_rng = random.Random(f"himed-demo-text/{seed}/{index}")
    findings, impression, labels, omitted = write_report(image_findings, text_rng, omit_rate)
    return DemoStudy(index, image_findings, views, findings, impression, labels, omitted, indication)


# ----------------------------------------------------------------------------------------------------------------
# Drawing (pure: an array from findings, a view and a seed)
# ----------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    # Pixel centres in [0, 1]: geometry is written in fractions of the image so any size draws the same picture.
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    return yy, xx


def _soft_ellipse(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float, edge: float
) -> np.ndarray:
    """1 inside the ellipse, 0 outside, a linear ramp about ``edge`` wide (in image fractions) at its border."""
    out = np.zeros_like(yy)
    size = yy.shape[0]
    r0, r1 = _pixel_range(cy - ry - 2 * edge, cy + ry + 2 * edge, size)
    c0, c1 = _pixel_range(cx - rx - 2 * edge, cx + rx + 2 * edge, size)
    if r0 >= r1 or c0 >= c1:
        return out
    ys, xs = yy[r0:r1, c0:c1], xx[r0:r1, c0:c1]
    r = np.sqrt(((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2)
    out[r0:r1, c0:c1] = np.clip((1.0 - r) * (min(ry, rx) / edge) + 0.5, 0.0, 1.0)
    return out


def _segment(
    yy: np.ndarray,
    xx: np.ndarray,
    p0: tuple[float, float],
    p1: tuple[float, float],
    width: float,
    into: np.ndarray | None = None,
) -> np.ndarray:
    """A line from ``p0`` to ``p1`` ((y, x) fractions) with a Gaussian profile of std ``width``.

    With ``into``, the line is max-combined into that array in place (and it is returned): no full-size temporary.
    """
    (y0, x0), (y1, x1) = p0, p1
    out = np.zeros_like(yy) if into is None else into
    # Only the segment's bounding box (plus 4 std) is computed: most lines are short and this is the hot loop.
    size = yy.shape[0]
    pad = 4 * width
    r0, r1 = _pixel_range(min(y0, y1) - pad, max(y0, y1) + pad, size)
    c0, c1 = _pixel_range(min(x0, x1) - pad, max(x0, x1) + pad, size)
    if r0 >= r1 or c0 >= c1:
        return out
    ys, xs = yy[r0:r1, c0:c1], xx[r0:r1, c0:c1]
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((ys - y0) * dy + (xs - x0) * dx) / max(dy * dy + dx * dx, 1e-12), 0.0, 1.0)
    dist2 = (ys - (y0 + t * dy)) ** 2 + (xs - (x0 + t * dx)) ** 2
    window = out[r0:r1, c0:c1]
    np.maximum(window, np.exp(-dist2 / (2 * width * width)), out=window)
    return out


def _pixel_range(low: float, high: float, size: int) -> tuple[int, int]:
    return max(0, int(np.floor(low * size))), min(size, int(np.ceil(high * size)) + 1)


def _polyline(yy: np.ndarray, xx: np.ndarray, points: Sequence[tuple[float, float]], width: float) -> np.ndarray:
    out = np.zeros_like(yy)
    for a, b in zip(points, points[1:], strict=False):
        _segment(yy, xx, a, b, width, into=out)
    return out


def _mix(image: np.ndarray, value: float, alpha: np.ndarray) -> np.ndarray:
    return image * (1.0 - alpha) + value * alpha


@dataclass(frozen=True)
class _Lung:
    cy: float
    cx: float
    ry: float
    rx: float
    lateral: float  # +1 when the lateral chest wall is towards larger x (image right = patient left)

    @property
    def bottom(self) -> float:
        return self.cy + self.ry


def _sides(side: str | None) -> tuple[str, ...]:
    return ("right", "left") if side == "bilateral" else (side or "right",)


_FAINT = 0.45  # hedged (-1) findings are drawn at this fraction of the intensity


def _draw_frontal(
    findings: Sequence[ImageFinding], size: int, anatomy: np.random.Generator, detail: np.random.Generator
) -> np.ndarray:
    yy, xx = _grid(size)
    edge = 1.2 / size
    line_width = max(0.008, 0.9 / size)
    shift_x, shift_y = anatomy.uniform(-0.025, 0.025, size=2)
    scale = anatomy.uniform(0.94, 1.06)
    lungs = {
        # Patient's right lung is on the image's left.
        "right": _Lung(0.47 + shift_y, 0.29 + shift_x, 0.30 * scale, 0.155 * scale, -1.0),
        "left": _Lung(0.47 + shift_y, 0.71 + shift_x, 0.29 * scale, 0.15 * scale, 1.0),
    }
    by_obs: dict[str, list[ImageFinding]] = {}
    for f in findings:
        by_obs.setdefault(f.observation, []).append(f)

    image = np.full((size, size), 0.04, dtype=np.float32)
    image = _mix(image, 0.30, _soft_ellipse(yy, xx, 0.58 + shift_y, 0.5 + shift_x, 0.52, 0.47, edge))
    lung_masks = {name: _soft_ellipse(yy, xx, lung.cy, lung.cx, lung.ry, lung.rx, edge) for name, lung in lungs.items()}
    lung_any = np.maximum(lung_masks["right"], lung_masks["left"])
    image = _mix(image, 0.12, lung_any)

    # Lung markings: vessels fanning out from each hilum, fading towards the periphery.
    markings = np.zeros_like(image)
    for lung in lungs.values():
        hilum = (lung.cy - 0.01, lung.cx - lung.lateral * 0.09)
        for angle in np.linspace(-1.1, 1.2, 6) + anatomy.uniform(-0.12, 0.12, size=6):
            length = anatomy.uniform(0.16, 0.24)
            end = (hilum[0] - np.sin(angle) * length * 1.2, hilum[1] + lung.lateral * np.cos(angle) * length)
            _segment(yy, xx, hilum, end, 0.006, into=markings)
    image = image + 0.07 * markings * lung_any

    # Ribs: seven gentle arcs across each lung, as one periodic profile per lung.
    rib_gap = anatomy.uniform(0.08, 0.09)
    rib_start = anatomy.uniform(0.19, 0.23) + shift_y
    ribs = np.zeros_like(image)
    for lung in lungs.values():
        offset = yy - rib_start - 0.06 * ((xx - (lung.cx - lung.lateral * 0.12)) / 0.25) ** 2
        nearest = offset - rib_gap * np.clip(np.rint(offset / rib_gap), 0, 6)
        ribs = np.maximum(ribs, np.exp(-(nearest**2) / (2 * 0.007**2)))
    image = image + 0.06 * ribs * lung_any

    for f in by_obs.get(PNEUMOTHORAX, []):
        # The lung collapses away from the apex and the lateral wall: outside it, black with no markings, and a
        # bright visceral pleural edge.
        lung = lungs[_sides(f.side)[0]]
        collapse = {"small": 0.3, "moderate": 0.4, "large": 0.52}[f.severity] if f.certainty == 1 else 0.2
        ry, rx = lung.ry * (1 - 0.7 * collapse), lung.rx * (1 - collapse)
        cy, cx = lung.bottom - ry, lung.cx - lung.lateral * (lung.rx - rx)
        inner = _soft_ellipse(yy, xx, cy, cx, ry, rx, edge)
        outer = _soft_ellipse(yy, xx, lung.cy, lung.cx, lung.ry, lung.rx, edge)
        gas = outer * (1 - inner)
        strength = 1.0 if f.certainty == 1 else _FAINT
        image = _mix(image, 0.02, gas * strength)
        rim = _soft_ellipse(yy, xx, cy, cx, ry + 0.016, rx + 0.016, edge) * (1 - inner) * outer
        image = image + 0.45 * strength * rim

    for f in by_obs.get(EDEMA, []):
        amp = {"mild": 0.16, "moderate": 0.22, "severe": 0.28}[f.severity] if f.certainty == 1 else 0.08
        haze = np.zeros_like(image)
        for lung in lungs.values():
            hy, hx = lung.cy, lung.cx - lung.lateral * 0.06
            haze = np.maximum(haze, np.exp(-(((yy - hy) / 0.14) ** 2 + ((xx - hx) / 0.10) ** 2) / 2))
            if f.certainty == 1:  # septal (Kerley B) lines at the lateral bases
                for k in range(4):
                    y_line = lung.bottom - 0.06 - 0.035 * k
                    x_wall = lung.cx + lung.lateral * (lung.rx * 0.85)
                    kerley = _segment(yy, xx, (y_line, x_wall), (y_line, x_wall - lung.lateral * 0.06), 0.005)
                    haze = np.maximum(haze, 0.8 * kerley)
        image = image + amp * haze * lung_any

    # Effusions before the other basal signs, so consolidation and atelectasis stay visible over or above fluid.
    fluid_top = {side: lung.bottom for side, lung in lungs.items()}
    for f in by_obs.get(EFFUSION, []):
        height = {"small": 0.09, "moderate": 0.15, "large": 0.22}[f.severity] if f.certainty == 1 else 0.07
        strength = 1.0 if f.certainty == 1 else 0.6
        for side in _sides(f.side):
            lung = lungs[side]
            # The meniscus: the fluid line rises towards the lateral chest wall.
            lateral_pos = np.clip((xx - lung.cx) * lung.lateral / lung.rx, 0, 1)
            level = lung.bottom - height - 0.08 * lateral_pos
            fluid = np.clip((yy - level) / (2 * edge) + 0.5, 0, 1) * lung_masks[side]
            image = _mix(image, 0.50, fluid * strength)
            fluid_top[side] = lung.bottom - height - 0.08

    for f in by_obs.get(CONSOLIDATION, []):
        lung = lungs[_sides(f.side)[0]]
        cy = lung.cy + (-0.13 if f.zone == "upper" else 0.12) + detail.uniform(-0.02, 0.02)
        cx = lung.cx + lung.lateral * detail.uniform(-0.01, 0.04)
        blobs = np.zeros_like(image)
        for _ in range(6):
            by, bx = cy + detail.uniform(-0.05, 0.05), cx + detail.uniform(-0.045, 0.045)
            sigma = detail.uniform(0.025, 0.04)
            blobs = blobs + detail.uniform(0.6, 1.0) * np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / (2 * sigma**2))
        amp = 0.38 if f.certainty == 1 else 0.38 * _FAINT
        image = image + amp * np.clip(blobs, 0, 1) * lung_masks[_sides(f.side)[0]]

    for f in by_obs.get(ATELECTASIS, []):
        amp = {"minimal": 0.4, "mild": 0.46}[f.severity] if f.certainty == 1 else 0.46 * _FAINT
        for side in _sides(f.side):
            lung = lungs[side]
            # Above the base (and above any fluid), towards the lateral side where the heart does not cover it.
            y0 = min(lung.bottom - 0.11, fluid_top[side] - 0.04) + detail.uniform(-0.015, 0.015)
            tilt = detail.uniform(-0.03, 0.03)
            medial, lateral = lung.cx - lung.lateral * 0.05, lung.cx + lung.lateral * 0.11
            band = _segment(yy, xx, (y0 - tilt, medial), (y0 + tilt, lateral), 0.016)
            image = image + amp * band * lung_masks[side]

    # Mediastinum: spine and trachea, then the heart.
    image = _mix(image, 0.46, _soft_ellipse(yy, xx, 0.40 + shift_y, 0.5 + shift_x, 0.40, 0.055, edge))
    image = _mix(image, 0.16, _soft_ellipse(yy, xx, 0.2 + shift_y, 0.5 + shift_x, 0.17, 0.018, edge))
    heart_rx = anatomy.uniform(0.115, 0.13)
    for f in by_obs.get(CARDIOMEGALY, []):
        heart_rx = {"mild": 0.175, "moderate": 0.2, "severe": 0.23}[f.severity] if f.certainty == 1 else 0.155
    heart_ry = 0.11 + 0.25 * (heart_rx - 0.12)
    # The heart sits a little towards the patient's left (image right); an enlarged one widens both borders, so
    # the sign is visible on either side of the spine.
    heart = _soft_ellipse(yy, xx, 0.64 + shift_y, 0.53 + shift_x, heart_ry, heart_rx, edge)
    image = _mix(image, 0.52, heart)
    # Clavicles.
    for lateral in (-1.0, 1.0):
        clavicle = _segment(
            yy, xx, (0.15 + shift_y, 0.5 + shift_x + 0.06 * lateral), (0.11 + shift_y, 0.5 + 0.3 * lateral), 0.012
        )
        image = image + 0.15 * clavicle

    devices = np.zeros_like(image)
    for f in by_obs.get(SUPPORT_DEVICES, []):
        sx, sy = shift_x, shift_y
        if f.device == "endotracheal tube":
            devices = np.maximum(devices, _segment(yy, xx, (0.0, 0.5 + sx), (0.3 + sy, 0.5 + sx), line_width))
        elif f.device == "central line":
            points = [(0.06 + sy, 0.37 + sx), (0.2 + sy, 0.44 + sx), (0.42 + sy, 0.46 + sx)]
            devices = np.maximum(devices, _polyline(yy, xx, points, line_width))
        elif f.device == "enteric tube":
            points = [(0.0, 0.515 + sx), (0.7 + sy, 0.53 + sx), (0.86 + sy, 0.66 + sx)]
            devices = np.maximum(devices, _polyline(yy, xx, points, line_width))
        elif f.device == "pacemaker":
            box = np.clip(1.0 - np.maximum(abs(yy - 0.2 - sy) / 0.035, abs(xx - 0.8 - sx) / 0.05), 0, 1) * 4
            lead = _polyline(yy, xx, [(0.2 + sy, 0.77 + sx), (0.3 + sy, 0.55 + sx), (0.66 + sy, 0.5 + sx)], line_width)
            devices = np.maximum(devices, np.maximum(np.clip(box, 0, 1), lead))
    return _mix(image, 0.97, devices)


def _draw_lateral(
    findings: Sequence[ImageFinding], size: int, anatomy: np.random.Generator, detail: np.random.Generator
) -> np.ndarray:
    """A lateral view (anterior to the image's left): no laterality, but the same findings, drawn on one lung field."""
    yy, xx = _grid(size)
    edge = 1.2 / size
    line_width = max(0.008, 0.9 / size)
    shift_x, shift_y = anatomy.uniform(-0.025, 0.025, size=2)
    lung = _Lung(0.47 + shift_y, 0.5 + shift_x, 0.31, 0.28, 1.0)
    by_obs: dict[str, list[ImageFinding]] = {}
    for f in findings:
        by_obs.setdefault(f.observation, []).append(f)

    image = np.full((size, size), 0.04, dtype=np.float32)
    image = _mix(image, 0.30, _soft_ellipse(yy, xx, 0.56 + shift_y, 0.5 + shift_x, 0.52, 0.44, edge))
    lung_mask = _soft_ellipse(yy, xx, lung.cy, lung.cx, lung.ry, lung.rx, edge)
    image = _mix(image, 0.13, lung_mask)
    for k in range(6):  # posterior ribs crossing obliquely
        y_rib = 0.22 + 0.09 * k + shift_y
        image = image + 0.05 * _segment(yy, xx, (y_rib - 0.05, 0.3), (y_rib + 0.05, 0.8), 0.007) * lung_mask
    # Spine (posterior, image right) as vertebral blocks, sternum (anterior) as a thin band.
    vertebrae = (np.sin((yy - shift_y) * 2 * np.pi / 0.075) > -0.6).astype(np.float32)
    spine = _soft_ellipse(yy, xx, 0.55 + shift_y, 0.86 + shift_x, 0.5, 0.05, edge) * vertebrae
    image = _mix(image, 0.5, spine)
    image = _mix(image, 0.42, _soft_ellipse(yy, xx, 0.45 + shift_y, 0.15 + shift_x, 0.22, 0.015, edge))

    for f in by_obs.get(PNEUMOTHORAX, []):
        strength = 1.0 if f.certainty == 1 else _FAINT
        gas = _soft_ellipse(yy, xx, lung.cy - lung.ry * 0.75, lung.cx, lung.ry * 0.35, lung.rx * 0.7, edge) * lung_mask
        image = _mix(image, 0.03, gas * 0.7 * strength)
    for f in by_obs.get(EDEMA, []):
        amp = {"mild": 0.16, "moderate": 0.22, "severe": 0.28}[f.severity] if f.certainty == 1 else 0.08
        haze = np.exp(-(((yy - lung.cy) / 0.15) ** 2 + ((xx - lung.cx) / 0.13) ** 2) / 2)
        image = image + amp * haze * lung_mask
    fluid_top = lung.bottom
    for f in by_obs.get(EFFUSION, []):
        height = {"small": 0.09, "moderate": 0.15, "large": 0.22}[f.severity] if f.certainty == 1 else 0.07
        strength = 1.0 if f.certainty == 1 else 0.6
        # Fluid gathers first in the posterior costophrenic sulcus (image right on this lateral).
        posterior = np.clip((xx - lung.cx) / lung.rx, 0, 1)
        level = lung.bottom - height - 0.08 * posterior
        fluid = np.clip((yy - level) / (2 * edge) + 0.5, 0, 1) * lung_mask
        image = _mix(image, 0.5, fluid * strength)
        fluid_top = min(fluid_top, lung.bottom - height - 0.08)
    for f in by_obs.get(CONSOLIDATION, []):
        cy = lung.cy + (-0.12 if f.zone == "upper" else 0.12)
        cx = lung.cx + detail.uniform(-0.08, 0.08)
        blobs = np.zeros_like(image)
        for _ in range(6):
            by, bx = cy + detail.uniform(-0.05, 0.05), cx + detail.uniform(-0.05, 0.05)
            sigma = detail.uniform(0.025, 0.04)
            blobs = blobs + detail.uniform(0.6, 1.0) * np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / (2 * sigma**2))
        amp = 0.38 if f.certainty == 1 else 0.38 * _FAINT
        image = image + amp * np.clip(blobs, 0, 1) * lung_mask
    for f in by_obs.get(ATELECTASIS, []):
        amp = 0.42 if f.certainty == 1 else 0.42 * _FAINT
        y0 = min(lung.bottom - 0.1, fluid_top - 0.04) + detail.uniform(-0.015, 0.015)
        image = image + amp * _segment(yy, xx, (y0, lung.cx - 0.15), (y0 + 0.02, lung.cx + 0.12), 0.016) * lung_mask

    heart_rx = anatomy.uniform(0.12, 0.135)
    for f in by_obs.get(CARDIOMEGALY, []):
        heart_rx = {"mild": 0.17, "moderate": 0.195, "severe": 0.225}[f.severity] if f.certainty == 1 else 0.15
    # The heart is anterior and grows backwards into the lung field.
    heart = _soft_ellipse(yy, xx, 0.64 + shift_y, 0.3 + shift_x + 0.8 * (heart_rx - 0.12), 0.13, heart_rx, edge)
    image = _mix(image, 0.5, heart)

    devices = np.zeros_like(image)
    for f in by_obs.get(SUPPORT_DEVICES, []):
        sx, sy = shift_x, shift_y
        if f.device == "endotracheal tube":
            devices = np.maximum(devices, _segment(yy, xx, (0.0, 0.42 + sx), (0.3 + sy, 0.5 + sx), line_width))
        elif f.device == "central line":
            devices = np.maximum(devices, _segment(yy, xx, (0.08 + sy, 0.5 + sx), (0.42 + sy, 0.4 + sx), line_width))
        elif f.device == "enteric tube":
            points = [(0.0, 0.5 + sx), (0.7 + sy, 0.62 + sx), (0.86 + sy, 0.55 + sx)]
            devices = np.maximum(devices, _polyline(yy, xx, points, line_width))
        elif f.device == "pacemaker":
            box = np.clip(1.0 - np.maximum(abs(yy - 0.2 - sy) / 0.035, abs(xx - 0.13 - sx) / 0.03), 0, 1) * 4
            lead = _polyline(yy, xx, [(0.2 + sy, 0.15 + sx), (0.35 + sy, 0.3 + sx), (0.65 + sy, 0.35 + sx)], line_width)
            devices = np.maximum(devices, np.maximum(np.clip(box, 0, 1), lead))
    return _mix(image, 0.97, devices)


def _mottle(noise: np.random.Generator, size: int, std: float = 0.025) -> np.ndarray:
    from PIL import Image

    coarse = noise.normal(0.0, std, size=(max(2, size // 8),) * 2).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BILINEAR))


def draw_view(
    image_findings: Sequence[ImageFinding], view: str = "PA", size: int = 112, seed: int | Sequence[int] = 0
) -> np.ndarray:
    """Draw one view of a study: a ``size`` x ``size`` uint8 array (0 black .. 255 white).

    ``seed`` fixes the patient's anatomy (position, rib spacing, heart size, markings), the findings' detail, the
    mottle and the contrast curve through four independent streams, so drawing the same seed with and without a
    finding changes only the pixels the finding touches. ``view`` is PA, AP (frontal; AP slightly washed out, as
    portable films are) or LATERAL (anterior to the image's left; no laterality).
    """
    if size < MIN_IMAGE_SIZE:
        raise ValueError(f"image size must be at least {MIN_IMAGE_SIZE} pixels, got {size}")
    seed_words = [int(seed)] if isinstance(seed, int | np.integer) else [int(s) for s in seed]
    anatomy, detail, noise, tone = (
        np.random.default_rng(child) for child in np.random.SeedSequence(seed_words).spawn(4)
    )
    view = view.upper()
    if view in ("PA", "AP"):
        image = _draw_frontal(image_findings, size, anatomy, detail)
    elif view == "LATERAL":
        image = _draw_lateral(image_findings, size, anatomy, detail)
    else:
        raise ValueError(f"unknown view {view!r}; use PA, AP or LATERAL")
    if view == "AP":
        # Portable AP films: a slightly washed-out look, a cue a model may use but no label depends on.
        image = 0.06 + 0.92 * image
    # Mild film mottle: coarse (1/8 resolution, bilinear) rather than per-pixel noise, which would double the PNGs.
    image = image + _mottle(noise, size)
    levels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    # Contrast varies between "machines": a gamma curve applied as a 256-entry lookup table (cheap).
    gamma = tone.uniform(0.85, 1.15)
    lut = np.rint(255 * (np.arange(256) / 255) ** gamma).astype(np.uint8)
    return lut[levels]


def image_findings_from_labels(labels: Mapping[str, int], side: str = "right") -> tuple[ImageFinding, ...]:
    """Moderate findings for the positive (1) and uncertain (-1) drawn observations of ``labels``.

    A convenience for tests and examples: lateralised findings go on ``side``; consolidation in the lower zone;
    support devices as an endotracheal tube.
    """
    out = []
    for obs in DRAWN_OBSERVATIONS:
        certainty = labels.get(obs)
        if certainty not in (1, -1):
            continue
        if obs == SUPPORT_DEVICES:
            out.append(ImageFinding(obs, device="endotracheal tube"))
            continue
        severities = SEVERITIES.get(obs)
        severity = None if severities is None else ("moderate" if "moderate" in severities else severities[-1])
        obs_side = "bilateral" if obs == EDEMA else side
        out.append(ImageFinding(obs, certainty, obs_side, severity, "lower" if obs == CONSOLIDATION else None))
    return tuple(out)


def draw_from_labels(
    labels: Mapping[str, int], view: str = "PA", size: int = 112, seed: int = 0, side: str = "right"
) -> np.ndarray:
    """Draw a study image from CheXpert-style labels (see :func:`image_findings_from_labels`)."""
    return draw_view(image_findings_from_labels(labels, side), view, size, seed)


# ----------------------------------------------------------------------------------------------------------------
# Files (the I/O edge)
# ----------------------------------------------------------------------------------------------------------------


def study_id(index: int) -> str:
    return f"demo{index:05d}"


def split_assignment(n: int, seed: int = 0) -> list[str]:
    """The split of each study index: a seeded shuffle cut 80/10/10, every split non-empty (needs n >= 3)."""
    if n < 3:
        raise ValueError(f"n must be at least 3 (one study per split), got {n}")
    n_val = max(1, round(n * SPLIT_FRACTIONS["val"]))
    n_test = max(1, round(n * SPLIT_FRACTIONS["test"]))
    order = list(range(n))
    random.Random(f"himed-demo-split/{seed}").shuffle(order)
    splits = ["train"] * n
    for position, index in enumerate(order):
        if position < n_val:
            splits[index] = "val"
        elif position < n_val + n_test:
            splits[index] = "test"
    return splits


def _check_rates(omit_rate: float, lateral_rate: float) -> None:
    if not 0.0 <= omit_rate < 1.0:
        raise ValueError(f"omit_rate must be in [0, 1), got {omit_rate}")
    if not 0.0 <= lateral_rate <= 1.0:
        raise ValueError(f"lateral_rate must be in [0, 1], got {lateral_rate}")


def report_corpus(n: int = 2000, seed: int = 0) -> list[str]:
    """Report texts (findings + impression) of demo studies ``0..n-1`` for ``seed``, without drawing images.

    The same texts :func:`generate_demo` writes for that seed with ``omit_rate=0``; used to train the tiny model's
    tokenizer. Indications are appended as extra lines so their words are in the vocabulary too.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    reports = [sample_study(index, seed).report for index in range(n)]
    return reports + list(INDICATIONS)


def _is_demo_meta(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out-dir {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        meta = out_dir / "meta.json"
        if not overwrite:
            raise ValueError(f"--out-dir {out_dir} is not empty; pass --overwrite to replace an earlier demo set")
        if not _is_demo_meta(meta):
            # Never delete a directory we did not write.
            raise ValueError(f"--out-dir {out_dir} is not empty and holds no demo meta.json; refusing to overwrite it")
        shutil.rmtree(out_dir / "images", ignore_errors=True)
        for name in ("annotation.json", "meta.json"):
            (out_dir / name).unlink(missing_ok=True)
    try:
        (out_dir / "images").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create {out_dir / 'images'}: {error.strerror}") from None
    if not os.access(out_dir, os.W_OK):
        raise ValueError(f"--out-dir {out_dir} is not writable")


def _write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    # No metadata chunks and fixed compression: byte-identical files for identical pixels.
    Image.fromarray(pixels, mode="L").save(path, format="PNG", optimize=False, compress_level=6)


def _image_paths(study: DemoStudy) -> list[str]:
    return [f"{study_id(study.index)}/{view.lower()}.png" for view in study.views]


def _write_study_images(
    images_dir: Path, seed: int, image_size: int, jobs: Sequence[tuple[int, tuple[ImageFinding, ...], tuple[str, ...]]]
) -> int:
    """Draw and write the views of ``jobs`` (index, findings, views); the unit of work of a worker process."""
    written = 0
    for index, image_findings, views in jobs:
        (images_dir / study_id(index)).mkdir(exist_ok=True)
        for view_index, view in enumerate(views):
            pixels = draw_view(image_findings, view, image_size, seed=(seed, index, view_index))
            _write_png(images_dir / study_id(index) / f"{view.lower()}.png", pixels)
            written += 1
    return written


# Below this many studies a process pool costs more (interpreter start-up) than it saves.
MIN_STUDIES_PER_WORKER = 150


def _draw_all(images_dir: Path, studies: Sequence[DemoStudy], seed: int, image_size: int, workers: int) -> int:
    jobs = [(study.index, study.image_findings, study.views) for study in studies]
    workers = max(1, min(workers, len(jobs) // MIN_STUDIES_PER_WORKER))
    if workers == 1:
        return _write_study_images(images_dir, seed, image_size, jobs)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Each image depends only on (seed, index, view), so the split into chunks cannot change any file. "spawn":
    # forking a parent that already runs torch's thread pools can deadlock.
    chunks = [jobs[start :: workers * 4] for start in range(workers * 4)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(_write_study_images, images_dir, seed, image_size, chunk) for chunk in chunks]
        return sum(future.result() for future in futures)


def generate_demo(
    out_dir: str | os.PathLike,
    n: int = 1500,
    seed: int = 0,
    omit_rate: float = 0.0,
    image_size: int = 112,
    lateral_rate: float = LATERAL_RATE,
    overwrite: bool = False,
    workers: int = 1,
    omit_splits: Sequence[str] = OMIT_SPLITS,
) -> dict:
    """Write the demo set to ``out_dir`` (layout in the module docstring) and return its summary.

    The summary (also ``meta.json``): the arguments, ``generator_version``, ``splits`` (studies per split),
    ``images``, ``prevalence`` (fraction of studies whose labels have each observation positive or uncertain) and
    ``mentioned`` (fraction with the observation in their labels at all). ``omit_rate`` applies to the rows of
    ``omit_splits`` only (default: train), so evaluation references stay complete. ``workers`` > 1 draws in that many
    processes (spawned: a script calling this needs the usual ``if __name__ == "__main__":`` guard); the files are
    identical either way. Raises ValueError for bad arguments or an output directory that cannot be written.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 3:
        raise ValueError(f"n must be an integer of at least 3 (one study per split), got {n!r}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    _check_rates(omit_rate, lateral_rate)
    omit_splits = tuple(omit_splits)
    unknown = sorted(set(omit_splits) - set(SPLIT_FRACTIONS))
    if unknown:
        raise ValueError(f"omit_splits: unknown split(s) {unknown}; use {', '.join(SPLIT_FRACTIONS)}")
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    # Claim the directory first, so that an interrupted run can be replaced with --overwrite.
    (out_dir / "meta.json").write_text(json.dumps({"generator": GENERATOR, "complete": False}) + "\n")

    splits = split_assignment(n, seed)
    studies = [
        sample_study(index, seed, omit_rate if splits[index] in omit_splits else 0.0, lateral_rate)
        for index in range(n)
    ]
    n_images = _draw_all(out_dir / "images", studies, seed, image_size, workers)

    annotation: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    positive_counts = dict.fromkeys(CHEXBERT_OBSERVATIONS, 0)
    mentioned_counts = dict.fromkeys(CHEXBERT_OBSERVATIONS, 0)
    for study in studies:
        for obs, value in study.labels.items():
            mentioned_counts[obs] += 1
            positive_counts[obs] += value in (1, -1)
        row = {
            "id": study_id(study.index),
            "report": study.report,
            "image_path": _image_paths(study),
            "split": splits[study.index],
            "findings": study.findings,
            "impression": study.impression,
            "labels": study.labels,
            "views": list(study.views),
        }
        if study.indication:
            row["indication"] = study.indication
        annotation[splits[study.index]].append(row)
    omitted_findings = sum(len(study.omitted) for study in studies)

    summary = {
        "generator": GENERATOR,
        "complete": True,
        "generator_version": GENERATOR_VERSION,
        "n": n,
        "seed": seed,
        "omit_rate": omit_rate,
        "omit_splits": [name for name in SPLIT_FRACTIONS if name in omit_splits],
        "image_size": image_size,
        "lateral_rate": lateral_rate,
        "labels_note": (
            "labels are image truth: every drawn finding is 1 (clear) or -1 (faint, hedged in the text); with "
            "omit_rate > 0 some drawn findings of the omit_splits rows are left out of the report text while labels "
            "keep them. "
            "0 = mentioned negatively; unmentioned absent findings have no key."
        ),
        "splits": {name: len(rows) for name, rows in annotation.items()},
        "images": n_images,
        "omitted_findings": omitted_findings,
        "prevalence": {obs: round(count / n, 4) for obs, count in positive_counts.items() if count},
        "mentioned": {obs: round(count / n, 4) for obs, count in mentioned_counts.items() if count},
        "configured_prevalence": dict(PREVALENCE),
    }
    (out_dir / "meta.json").write_text(json.dumps(summary, indent=2) + "\n")
    # Written last: an interrupted run leaves no annotation.json that looks complete.
    (out_dir / "annotation.json").write_text(json.dumps(annotation) + "\n")
    return summary
