"""The report prose of a demo study: findings and impression text and the labels they carry (pure functions)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from himed.clinical.observations import CHEXBERT_OBSERVATIONS, SUPPORT_DEVICES, with_no_finding
from himed.data.demo.findings import (
    ATELECTASIS,
    CARDIOMEGALY,
    CONSOLIDATION,
    DRAWN_OBSERVATIONS,
    EDEMA,
    EFFUSION,
    FRACTURE,
    INDICATION_RATE,
    INDICATIONS,
    LATERAL_RATE,
    MAX_IMPRESSION_ITEMS,
    MAX_REPORT_ITEMS,
    NEGATIVE_MENTION_RATE,
    PNEUMONIA,
    PNEUMOTHORAX,
    DemoStudy,
    ImageFinding,
    _study_random,
    sample_image_findings,
    sample_prior_findings,
)

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


def sample_study(
    index: int,
    seed: int = 0,
    omit_rate: float = 0.0,
    lateral_rate: float = LATERAL_RATE,
    prior_rate: float = 0.0,
) -> DemoStudy:
    """Study ``index`` of the demo set with ``seed``: a pure function of its arguments.

    With probability ``prior_rate`` the study has a ``prior_report``: the report of an earlier study of the same
    patient (:func:`sample_prior_report`). Priors use their own random streams, so ``prior_rate`` changes nothing
    else, and the studies with a prior at a lower rate keep it at a higher one.
    """
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
    prior_rng = random.Random(f"himed-demo-prior/{seed}/{index}")
    prior = sample_prior_report(image_findings, prior_rng) if prior_rng.random() < prior_rate else None
    return DemoStudy(index, image_findings, views, findings, impression, labels, omitted, indication, prior)


def sample_prior_report(image_findings: Sequence[ImageFinding], rng: random.Random) -> str:
    """The report (findings + impression) of an earlier study of the same patient, by :func:`write_report`.

    Its findings are ``image_findings`` perturbed (:func:`sample_prior_findings`): some current findings are new
    since, some earlier ones have resolved, grades differ. The prior is complete (nothing omitted).
    """
    findings, impression, _, _ = write_report(sample_prior_findings(image_findings, rng), rng)
    return f"{findings} {impression}" if impression else findings


def report_corpus(n: int = 2000, seed: int = 0) -> list[str]:
    """Report texts (findings + impression) of demo studies ``0..n-1`` for ``seed``, without drawing images.

    The same texts :func:`generate_demo` writes for that seed with ``omit_rate=0``; used to train the tiny model's
    tokenizer. Indications are appended as extra lines so their words are in the vocabulary too.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    reports = [sample_study(index, seed).report for index in range(n)]
    return reports + list(INDICATIONS)
