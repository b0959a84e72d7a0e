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
                          "impression", "labels", "views", ["indication"], ["prior_report"]}]}
    DIR/images/<id>/<view>.png   image_path entries are relative to DIR/images/
    DIR/meta.json         n, seed, omit_rate, image_size, generator version, prevalences, split counts

Prior reports
    With ``prior_rate`` > 0 (``himed data demo --prior-rate R``), a fraction R of the studies carry a
    ``prior_report``: the report of an earlier study of the same patient, written by the same prose generator from
    the study's findings perturbed (some new since, some resolved, grades changed). The R2Gen loader reads it into
    the row's ``prior_report``, which the prompt shows when ``include_prior`` is on. The default 0 writes none.

Everything is a pure function of ``(seed, study index)``: the same arguments give byte-identical files, and
:func:`report_corpus` returns the same report texts as :func:`generate_demo` without drawing any image.
"""

from himed.data.demo.drawing import draw_from_labels, draw_view
from himed.data.demo.findings import (
    DRAWN_OBSERVATIONS,
    GENERATOR,
    GENERATOR_VERSION,
    LATERAL_RATE,
    PREVALENCE,
    SEVERITIES,
    SPLIT_FRACTIONS,
    DemoStudy,
    ImageFinding,
    image_findings_from_labels,
    sample_image_findings,
    sample_prior_findings,
)
from himed.data.demo.report import report_corpus, sample_prior_report, sample_study, write_report
from himed.data.demo.writing import generate_demo, split_assignment, study_id

__all__ = [
    "DRAWN_OBSERVATIONS",
    "GENERATOR",
    "GENERATOR_VERSION",
    "LATERAL_RATE",
    "PREVALENCE",
    "SEVERITIES",
    "SPLIT_FRACTIONS",
    "DemoStudy",
    "ImageFinding",
    "draw_from_labels",
    "draw_view",
    "generate_demo",
    "image_findings_from_labels",
    "report_corpus",
    "sample_image_findings",
    "sample_prior_findings",
    "sample_prior_report",
    "sample_study",
    "split_assignment",
    "study_id",
    "write_report",
]
