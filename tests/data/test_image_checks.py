"""Image check levels, the parallel check and its per-dataset cache shared by the ranks of a run."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from himed.data import image_checks
from himed.data.image_checks import check_image_files
from himed.data.loaders import load_jsonl
from himed.data.rows import CORRUPT_IMAGE, MISSING_IMAGE, BadRowError, check_image_file

ROOT = Path(__file__).resolve().parents[2]


def write_jpeg(path: Path, size=(64, 48), value=120) -> Path:
    Image.new("L", size, value).save(path, quality=90)
    return path


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


@pytest.fixture()
def files(tmp_path):
    good = write_jpeg(tmp_path / "good.jpg", size=(300, 200))
    cut = truncate(write_jpeg(tmp_path / "cut.jpg", size=(300, 200)))
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    return {"good": str(good), "cut": str(cut), "text": str(text), "missing": str(tmp_path / "missing.jpg")}


def test_levels(files):
    for level in ("open", "verify", "decode"):
        check_image_file(files["good"], where="w", level=level)
        with pytest.raises(BadRowError, match="not found") as caught:
            check_image_file(files["missing"], where="w", level=level)
        assert caught.value.reason == MISSING_IMAGE
        with pytest.raises(BadRowError, match="unreadable"):
            check_image_file(files["text"], where="w", level=level)
    check_image_file(files["cut"], where="w", level="verify")  # verify passes a truncated body ...
    with pytest.raises(BadRowError, match="truncated") as caught:  # ... only a decode catches it
        check_image_file(files["cut"], where="w", level="decode")
    assert caught.value.reason == CORRUPT_IMAGE
    check_image_file(files["missing"], where="w", level="none")
    assert check_image_files(list(files.values()), "none") == {}


def test_parallel_check_and_cache(files, tmp_path, monkeypatch):
    monkeypatch.setenv("HIMED_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    real = image_checks.image_file_problem
    monkeypatch.setattr(image_checks, "image_file_problem", lambda p, level: calls.append(p) or real(p, level))
    paths = list(files.values())
    problems = check_image_files(paths, "decode", cache_key="dataset-a", workers=3)
    assert set(problems) == {files["cut"], files["text"], files["missing"]}
    assert len(calls) == 4
    calls.clear()
    assert check_image_files(paths, "decode", cache_key="dataset-a") == problems
    assert calls == [files["missing"]]  # a missing file has no size/mtime to key on: checked again (cheap)
    calls.clear()
    write_jpeg(Path(files["cut"]), size=(300, 200))  # repaired: new size and mtime
    os.utime(files["cut"], ns=(1, 1))
    problems = check_image_files(paths, "decode", cache_key="dataset-a")
    assert files["cut"] not in problems and sorted(calls) == sorted([files["cut"], files["missing"]])


def test_loader_checks_with_decode_level(tmp_path):
    write_jpeg(tmp_path / "a.jpg")
    truncate(write_jpeg(tmp_path / "b.jpg", size=(300, 200)))
    rows = [
        {"id": "a", "findings": "Clear.", "images": ["a.jpg"]},
        {"id": "b", "findings": "Clear.", "images": ["b.jpg"]},
    ]
    (tmp_path / "rows.jsonl").write_text("\n".join(__import__("json").dumps(r) for r in rows) + "\n")
    assert len(load_jsonl(tmp_path / "rows.jsonl", check_images="verify")) == 2
    with pytest.raises(BadRowError, match=r"rows.jsonl:2: field 'images\[0\]'.*b.jpg.*truncated"):
        load_jsonl(tmp_path / "rows.jsonl", check_images="decode")
    assert [r["id"] for r in load_jsonl(tmp_path / "rows.jsonl", check_images="decode", on_bad="skip")] == ["a"]


def test_ranks_check_once(tmp_path):
    """Two processes (two ranks) check the same dataset at once: one checks every file, the other waits and reuses."""
    for i in range(60):
        write_jpeg(tmp_path / f"{i}.jpg", size=(400, 300), value=i)
    script = textwrap.dedent(
        f"""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
        from himed.data.image_checks import check_image_files
        paths = [f"{tmp_path}/{{i}}.jpg" for i in range(60)]
        check_image_files(paths, "decode", cache_key="shared", workers=1)
        """
    )
    env = {**os.environ, "HIMED_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    ranks = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True) for _ in "01"]
    outputs = [rank.communicate(timeout=120)[0] for rank in ranks]
    assert all(rank.returncode == 0 for rank in ranks)
    reused = sorted(int(out.split("bad, ")[1].split(" results")[0]) for out in outputs)
    assert reused == [0, 60], outputs
