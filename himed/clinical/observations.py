"""The CheXpert / CheXbert observation vocabulary and the label conventions of docs/data.md.

Labels are ``{observation: 1 | 0 | -1}`` (positive, negative, uncertain) for mentioned observations only.
No Finding is 1 when no observation other than Support Devices is positive or uncertain, otherwise absent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

# CheXbert's head order (Smit et al. 2020); also the order of the 14-way clinical efficacy metrics.
CHEXBERT_OBSERVATIONS = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)
# The five observations of the CheXpert competition, used by most report-generation papers' CE-5 numbers.
FIVE_OBSERVATIONS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"

POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
LABEL_VALUES = (POSITIVE, NEGATIVE, UNCERTAIN)


# The observation sets a config can name (``observations: five``), the one vocabulary of every reward, judge and
# stage that takes one.
OBSERVATION_SETS: dict[str, tuple[str, ...]] = {"five": FIVE_OBSERVATIONS, "all": CHEXBERT_OBSERVATIONS}


def observation_set(name: str, who: str | None = None) -> tuple[str, ...]:
    """The observations of set ``name`` (``five`` or ``all``, the 14 CheXbert names) as a tuple.

    ``who`` (e.g. ``"clinical reward"``) prefixes the error for an unknown name, which lists the valid ones.
    """
    if isinstance(name, str) and name in OBSERVATION_SETS:
        return OBSERVATION_SETS[name]
    prefix = f"{who}: " if who else ""
    raise ValueError(f"{prefix}observations must be one of {', '.join(OBSERVATION_SETS)}, got {name!r}")


def with_no_finding(labels: Mapping[str, int]) -> dict[str, int]:
    """Return ``labels`` with No Finding set by the rule (1 when nothing but devices is present)."""
    out = {name: value for name, value in labels.items() if name != NO_FINDING}
    present = any(value in (POSITIVE, UNCERTAIN) for name, value in out.items() if name != SUPPORT_DEVICES)
    if not present:
        out[NO_FINDING] = POSITIVE
    return out


def normalize_labels(labels: Mapping | str | None, where: str = "labels") -> dict[str, int]:
    """Validate a labels mapping (or its JSON text) and return it with None values dropped.

    Arrow struct columns give every row every key, with None for unmentioned observations: those are dropped.
    Raises ValueError naming ``where`` for an unknown observation or a value outside {1, 0, -1}.
    """
    if labels is None:
        return {}
    if isinstance(labels, str):
        try:
            labels = json.loads(labels) if labels.strip() else {}
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not valid JSON: {error}") from None
    if not isinstance(labels, Mapping):
        raise ValueError(f"{where}: expected a mapping of observation -> 1|0|-1, got {type(labels).__name__}")
    out = {}
    for name, value in labels.items():
        if value is None:
            continue
        if name not in CHEXBERT_OBSERVATIONS:
            raise ValueError(f"{where}: unknown observation {name!r}; known: {', '.join(CHEXBERT_OBSERVATIONS)}")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or value not in LABEL_VALUES:
            raise ValueError(f"{where}: {name!r} must be 1, 0 or -1, got {value!r}")
        out[name] = value
    return out
