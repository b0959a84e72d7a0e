"""What a demo study shows: the drawn observations, their prevalence and grades, and the sampled study.

See :mod:`himed.data.demo` for what a study is and how labels relate to the drawing.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from himed.clinical.observations import SUPPORT_DEVICES

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
# A prior study of the same patient: each current finding was already there with this probability (otherwise it
# is new since), and a finding absent now was there before (since resolved) with PRIOR_RESOLVED_RATE.
PRIOR_KEPT_RATE = 0.7
PRIOR_RESOLVED_RATE = 0.3


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
    prior_report: str | None = None

    @property
    def report(self) -> str:
        return f"{self.findings} {self.impression}" if self.impression else self.findings


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


def sample_prior_findings(current: Sequence[ImageFinding], rng: random.Random) -> tuple[ImageFinding, ...]:
    """What an earlier study of the same patient showed: ``current`` perturbed, in ``DRAWN_OBSERVATIONS`` order.

    Each current finding was present before with ``PRIOR_KEPT_RATE`` (its grade re-drawn, so it may have been
    milder or worse); findings of an independent draw that are absent now were present with
    ``PRIOR_RESOLVED_RATE`` (resolved since). Devices are kept or removed like any finding.
    """
    present = {f.observation for f in current}
    earlier: list[ImageFinding] = []
    for finding in current:
        if rng.random() >= PRIOR_KEPT_RATE:
            continue
        severities = SEVERITIES.get(finding.observation)
        if severities is not None and finding.certainty == 1:
            finding = replace(finding, severity=rng.choice(severities))
        earlier.append(finding)
    resolved = [f for f in sample_image_findings(rng) if f.observation not in present]
    earlier.extend(f for f in resolved if rng.random() < PRIOR_RESOLVED_RATE)
    return tuple(sorted(earlier, key=lambda f: DRAWN_OBSERVATIONS.index(f.observation)))
