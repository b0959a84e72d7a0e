"""``load_mimic_cxr_jpg`` on MIMIC-CXR-JPG-sized metadata (targets: <= 60 s and <= 2 GB peak RSS on 2 cores).

    python benchmarks/loaders.py [--output benchmarks/results/loaders.json] [--keep DIR]

Data: synthetic CSVs with MIMIC-CXR-JPG 2.x's published layout and size, written to a temporary folder (never
committed): ``mimic-cxr-2.0.0-split.csv.gz`` and ``mimic-cxr-2.0.0-metadata.csv.gz`` with 377,110 images of
227,835 studies of 65,379 subjects (the published counts), ``mimic-cxr-2.0.0-chexpert.csv.gz`` with one line per
study (14 label columns, 1.0/0.0/-1.0/blank), and the sectioned report CSV of MIMIC-CXR's
``create_section_files.py`` (``mimic_cxr_sectioned.csv.gz``; findings ~60 words and impression ~15 words, like the
real reports). The split proportions follow the published split (train 98.1%, validate 0.8%, test 1.1% of studies);
views are PA/AP/LATERAL/LL/blank in roughly the published proportions. No image files exist: the loads run with
image checks off (``check_images: none``), which is what this benchmark times: the CSV parsing and row building.

Each load runs in a fresh process (``python -c``), so its peak RSS (``ru_maxrss``) is the loader's own and includes
the Python start-up and imports. Timed: the train split with the default view filter (PA, AP), the train split with
``prior_report`` (the slowest option) and the test split. The loader is single-threaded, so its CPU seconds are the
time it takes on an idle core; wall seconds are recorded too, with the load averages (the machine is shared).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from himed.clinical.observations import CHEXBERT_OBSERVATIONS  # noqa: E402

N_IMAGES = 377_110
N_STUDIES = 227_835
N_SUBJECTS = 65_379
OBSERVATIONS = sorted(CHEXBERT_OBSERVATIONS)  # the label columns, in the published file's order
VIEWS = (("PA", 0.39), ("AP", 0.39), ("LATERAL", 0.18), ("LL", 0.03), ("", 0.01))
METADATA_COLUMNS = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
WORDS = (
    "the heart size is normal mediastinal and hilar contours are unremarkable lungs are clear without focal "
    "consolidation pleural effusion or pneumothorax there is mild bibasilar atelectasis right internal jugular "
    "catheter terminates in the mid svc osseous structures are intact no acute cardiopulmonary process"
).split()


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def _dicom_id(rng: random.Random) -> str:
    return "-".join(f"{rng.getrandbits(32):08x}" for _ in range(5))


def generate(root: Path, seed: int = 0) -> dict[str, int]:
    """Write the four gzipped CSVs into ``root``; returns the counts written."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    subjects = [10_000_000 + rng.randrange(10_000_000) for _ in range(N_SUBJECTS)]
    subjects = sorted(set(subjects))
    while len(subjects) < N_SUBJECTS:
        subjects = sorted(set(subjects) | {10_000_000 + rng.randrange(10_000_000)})
    # Studies per subject: every subject has one; the rest go to random subjects (a long tail, as in MIMIC-CXR).
    owners = list(range(N_SUBJECTS)) + [rng.randrange(N_SUBJECTS) for _ in range(N_STUDIES - N_SUBJECTS)]
    owners.sort()
    study_ids = rng.sample(range(50_000_000, 60_000_000), N_STUDIES)
    # Images per study: 1 for most, 2-4 for the rest, summing to exactly N_IMAGES.
    images_per_study = [1] * N_STUDIES
    extra = N_IMAGES - N_STUDIES
    while extra:
        k = rng.randrange(N_STUDIES)
        if images_per_study[k] < 4:
            images_per_study[k] += 1
            extra -= 1
    view_names = [name for name, _ in VIEWS]
    view_weights = [weight for _, weight in VIEWS]
    opener = {"compresslevel": 6, "newline": ""}
    with (
        gzip.open(root / "mimic-cxr-2.0.0-split.csv.gz", "wt", **opener) as split_file,
        gzip.open(root / "mimic-cxr-2.0.0-metadata.csv.gz", "wt", **opener) as metadata_file,
        gzip.open(root / "mimic-cxr-2.0.0-chexpert.csv.gz", "wt", **opener) as labels_file,
        gzip.open(root / "mimic_cxr_sectioned.csv.gz", "wt", **opener) as reports_file,
    ):
        split_writer = csv.writer(split_file)
        metadata_writer = csv.writer(metadata_file)
        labels_writer = csv.writer(labels_file)
        reports_writer = csv.writer(reports_file)
        split_writer.writerow(["dicom_id", "study_id", "subject_id", "split"])
        metadata_writer.writerow(METADATA_COLUMNS)
        labels_writer.writerow(["subject_id", "study_id", *OBSERVATIONS])
        reports_writer.writerow(["study", "impression", "findings", "last_paragraph", "comparison"])
        for k in range(N_STUDIES):
            subject, study = subjects[owners[k]], study_ids[k]
            draw = rng.random()
            split = "train" if draw < 0.981 else "validate" if draw < 0.989 else "test"
            date = f"21{rng.randrange(10, 99)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
            time_of_day = f"{rng.randrange(24):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}.{rng.randrange(1000)}"
            for view in rng.choices(view_names, view_weights, k=images_per_study[k]):
                dicom = _dicom_id(rng)
                split_writer.writerow([dicom, study, subject, split])
                metadata_writer.writerow(
                    [dicom, subject, study, "CHEST (PA AND LAT)", view, 3056, 2544, date, time_of_day]
                    + ["CHEST (PA AND LAT)", "postero-anterior", "Erect"]
                )
            labels = [rng.choice(("", "", "", "1.0", "0.0", "-1.0")) for _ in OBSERVATIONS]
            labels_writer.writerow([subject, study, *labels])
            findings = " ".join(_sentence(rng, rng.randrange(6, 14)) for _ in range(rng.randrange(3, 7)))
            impression = _sentence(rng, rng.randrange(5, 20))
            reports_writer.writerow([f"s{study}", impression, findings, impression, ""])
    return {"images": N_IMAGES, "studies": N_STUDIES, "subjects": N_SUBJECTS}


_LOAD = """
import json, resource, sys, time
start = time.perf_counter()
from himed.data.loaders import load_mimic_cxr_jpg
imported = time.perf_counter()
rows = load_mimic_cxr_jpg(sys.argv[1], sys.argv[2], check_images="none", prior_report=sys.argv[3] == "1")
end = time.perf_counter()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"rows": len(rows), "images": sum(len(r["images"]) for r in rows), "seconds": end - start,
                  "seconds_import": imported - start, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                  "peak_rss_mb": usage.ru_maxrss / 1024}))
"""


def machine_record(load_before: tuple[float, ...]) -> dict:
    """The machine and its load around a benchmark run (the machine is shared: the load says how much)."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def timed_load(root: Path, split: str, prior_report: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", _LOAD, str(root), split, "1" if prior_report else "0"]
    wall = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["seconds_process"] = time.perf_counter() - wall
    return {"split": split, "prior_report": prior_report, **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/loaders.json"))
    parser.add_argument("--keep", help="write the CSVs here and keep them (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mimic-cxr-jpg-") as temporary:
        root = Path(args.keep) if args.keep else Path(temporary)
        load_before = os.getloadavg()
        start = time.perf_counter()
        counts = generate(root, seed=args.seed)
        generated = time.perf_counter() - start
        sizes = {path.name: path.stat().st_size for path in sorted(root.glob("*.csv.gz"))}
        runs = [timed_load(root, "train", False), timed_load(root, "train", True), timed_load(root, "test", False)]
    worst_seconds = max(run["seconds_process"] for run in runs)
    worst_cpu = max(run["cpu_seconds"] for run in runs)
    worst_rss = max(run["peak_rss_mb"] for run in runs)
    result = {
        "benchmark": "load_mimic_cxr_jpg on MIMIC-CXR-JPG-sized synthetic metadata, image checks off",
        "command": "python benchmarks/loaders.py",
        "written": counts,
        "gzipped_bytes": sizes,
        "generate_seconds": round(generated, 1),
        "runs": runs,
        "targets": {"seconds": 60, "peak_rss_mb": 2048},
        # The loader is one single-threaded process: its CPU seconds are what it takes on an idle core; the wall
        # time also counts waiting for the CPU on a shared machine (see the load averages).
        "meets_targets": worst_cpu <= 60 and worst_rss <= 2048,
        "meets_targets_wall": worst_seconds <= 60 and worst_rss <= 2048,
        "machine": machine_record(load_before),
    }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["meets_targets"] else 1


if __name__ == "__main__":
    sys.exit(main())
