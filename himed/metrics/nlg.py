"""Corpus NLG metrics as R2Gen reports them: BLEU-1..4, METEOR 1.5, ROUGE-L and CIDEr from pycocoevalcap 1.2.

Variant implemented (what a reader needs to put these numbers next to a paper's table):

- Inputs are the already-cleaned texts (R2Gen's cleaning is applied by the caller, ``himed.metrics.scoring``),
  one hypothesis and one reference per study, passed to the scorers as ``{index: [text]}`` dicts. No PTB
  tokenizer and no reference truncation (DESIGN.md section 4): tokens are the space-separated words of the cleaned
  text, as in R2Gen's ``compute_scores``.
- BLEU (``Bleu(4)``, option ``closest``) and CIDEr (``Cider``, n = 4, sigma = 6; IDF from the references given, so
  the number depends on the evaluated set) are pycocoevalcap's own scorers, called directly.
- ROUGE-L is pycocoevalcap's definition (tokens from ``str.split(" ")``, beta = 1.2, punctuation kept, the corpus
  number is the mean of per-pair scores) with the longest common subsequence computed bit-parallel instead of by
  pycocoevalcap's O(n*m) Python loop; the result is the same float (tests check equality).
- METEOR is the METEOR 1.5 jar shipped with pycocoevalcap, run with pycocoevalcap's arguments (plus a JVM
  garbage-collector option that cannot change a score). Segment
  statistics are streamed to the jar from a writer thread (pycocoevalcap waits for each answer before sending the
  next line), and the corpus score is the jar's ``EVAL`` answer over all statistics, which is not the mean of
  per-pair scores. The jar is started before the other metrics are computed so its ~5-20 s start overlaps them.
- The jar reads one request per line and uses ``|||`` as a field separator: a newline inside a text deadlocks it
  and a stray ``|||`` shifts fields. ``coco_text`` therefore collapses all whitespace to single spaces and removes
  ``|||`` from every text before any scorer sees it, so all four metrics see the same strings.
- Without ``java`` on the PATH, METEOR falls back to nltk's ``meteor_score`` (mean of per-pair scores, WordNet
  synonyms when nltk's WordNet data is installed, otherwise exact + stem matching only) and is reported as
  ``meteor_nltk``: it is a different number and must never be put next to a paper's METEOR.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

NLG_METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")
METEOR_CHOICES = ("auto", "jar", "nltk")

_WHITESPACE = re.compile(r"\s+")
# pycocoevalcap's ROUGE-L weight of recall over precision (Rouge.beta): "updated based on discussion with Hovey".
ROUGE_BETA = 1.2


def coco_text(text: str) -> str:
    """The string every scorer sees: ``|||`` removed and whitespace (newlines included) collapsed to one space."""
    return _WHITESPACE.sub(" ", text.replace("|||", " ")).strip()


def java_available() -> bool:
    return shutil.which("java") is not None


# ---------------------------------------------------------------------------------------------------------------
# ROUGE-L


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences (bit-parallel, Hyyro 2004).

    Bit i of ``row`` is 1 while position i of ``a`` is not yet matched on the current LCS frontier; each token of
    ``b`` updates all positions at once with integer arithmetic, so the cost is O(len(b)) big-integer operations.
    """
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    row = full
    for token in b:
        matched = row & masks.get(token, 0)
        row = ((row + matched) | (row - matched)) & full
    return len(a) - row.bit_count()


def rouge_l_scores(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """pycocoevalcap's per-pair ROUGE-L (``Rouge.calc_score`` with one reference), as an array."""
    scores = []
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        # str.split(" ") as pycocoevalcap does: "" gives [""] (one empty token), which matters for empty outputs.
        token_c = hypothesis.split(" ")
        token_r = reference.split(" ")
        lcs = lcs_length(token_r, token_c)
        # Same operations in the same order as Rouge.calc_score, so the floats are bit-identical.
        prec = lcs / float(len(token_c))
        rec = lcs / float(len(token_r))
        if prec != 0 and rec != 0:
            score = ((1 + ROUGE_BETA**2) * prec * rec) / float(rec + ROUGE_BETA**2 * prec)
        else:
            score = 0.0
        scores.append(score)
    return np.array(scores)


# ---------------------------------------------------------------------------------------------------------------
# METEOR


def _meteor_dir() -> str:
    import pycocoevalcap.meteor.meteor as pycoco_meteor

    return os.path.dirname(os.path.abspath(pycoco_meteor.__file__))


class Meteor15Jar:
    """The METEOR 1.5 jar of pycocoevalcap behind a pipelined driver; start it early, call ``score`` once.

    The jar's arguments (``-l en -norm``, 2 GB heap) are pycocoevalcap's, so the statistics and scores are the same;
    ``JVM_OPTIONS`` only tune the JVM.
    """

    COMMAND = ("java", "-jar", "-Xmx2G", "meteor-1.5.jar", "-", "-", "-stdio", "-l", "en", "-norm")
    # JVM options added in front of pycocoevalcap's arguments. The serial collector saved ~20% of the jar's CPU on
    # 2,000 pairs (33 -> 27 CPU-s) with the same scores: Java floating point is strict, so the collector cannot
    # change a number, only how many threads compete with the Python side on a 2-core machine.
    JVM_OPTIONS = ("-XX:+UseSerialGC",)

    def __init__(self, process: subprocess.Popen | None = None) -> None:
        """Start the jar, or drive ``process``, a jar already started with ``COMMAND`` (tests share one)."""
        if process is not None:
            self._process = process
            return
        if not java_available():
            raise FileNotFoundError("METEOR 1.5 needs `java` on the PATH (Java 8 or newer)")
        # stderr is discarded rather than piped: an unread stderr pipe that fills up would block the jar.
        command = [self.COMMAND[0], *self.JVM_OPTIONS, *self.COMMAND[1:]]
        self._process = subprocess.Popen(
            command, cwd=_meteor_dir(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )

    def _readline(self) -> str:
        line = self._process.stdout.readline()
        if not line:
            code = self._process.poll()
            raise RuntimeError(f"the METEOR 1.5 jar stopped answering (exit code {code}); is Java working?")
        return line.decode("utf-8").strip()

    def score(self, hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, list[float]]:
        """Corpus METEOR and per-pair scores; texts must already be ``coco_text``-clean (checked)."""
        for text in (*hypotheses, *references):
            if "\n" in text or "\r" in text or "|||" in text:
                raise ValueError(f"METEOR input must be coco_text()-clean (no newline, no '|||'): {text[:80]!r}")
        # pycocoevalcap's own hypothesis clean-up, kept so a caller passing other text still gets its numbers.
        lines = [
            "SCORE ||| {} ||| {}\n".format(ref, hyp.replace("|||", "").replace("  ", " "))
            for hyp, ref in zip(hypotheses, references, strict=True)
        ]
        writer_error: list[BaseException] = []

        def write_all() -> None:
            try:
                for line in lines:
                    self._process.stdin.write(line.encode("utf-8"))
                self._process.stdin.flush()
            except BaseException as error:  # reported by the reading side
                writer_error.append(error)

        # Writing from a thread while this thread reads keeps both pipes moving: writing every line first would
        # fill the jar's output pipe and deadlock once it holds ~64 KB of unread answers.
        writer = threading.Thread(target=write_all, daemon=True)
        writer.start()
        try:
            stats = [self._readline() for _ in lines]
        finally:
            writer.join()
        if writer_error:
            raise RuntimeError(f"writing to the METEOR jar failed: {writer_error[0]}")
        self._process.stdin.write("EVAL ||| {}\n".format(" ||| ".join(stats)).encode("utf-8"))
        self._process.stdin.flush()
        scores = [float(self._readline()) for _ in lines]
        return float(self._readline()), scores

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> Meteor15Jar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _NoWordNet:
    """Stands in for nltk's WordNet when its data is not installed: no synonyms, so exact + stem matches only."""

    def synsets(self, *args: object, **kwargs: object) -> list:
        return []


def nltk_wordnet() -> tuple[object, bool]:
    """nltk's WordNet reader when its data is installed, else a synonym-free stand-in; and which one it is."""
    from nltk.corpus import wordnet

    try:
        wordnet.ensure_loaded()
        return wordnet, True
    except LookupError:
        return _NoWordNet(), False


def meteor_nltk_scores(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[list[float], bool]:
    """nltk METEOR per pair on space-separated tokens, and whether WordNet synonyms were used."""
    from nltk.translate.meteor_score import meteor_score

    wordnet, has_wordnet = nltk_wordnet()
    scores = [
        float(meteor_score([reference.split()], hypothesis.split(), wordnet=wordnet))
        for hypothesis, reference in zip(hypotheses, references, strict=True)
    ]
    return scores, has_wordnet


# ---------------------------------------------------------------------------------------------------------------
# The corpus metrics together


def resolve_meteor(meteor: str) -> str:
    """``jar`` or ``nltk`` for a requested ``auto|jar|nltk``; ``auto`` means the jar when Java is installed."""
    if meteor not in METEOR_CHOICES:
        raise ValueError(f"unknown METEOR variant {meteor!r}; choose one of {', '.join(METEOR_CHOICES)}")
    if meteor == "auto":
        if java_available():
            return "jar"
        logger.warning("`java` is not on the PATH: METEOR falls back to nltk and is reported as meteor_nltk")
        return "nltk"
    return meteor


def nlg_metrics(
    hypotheses: Sequence[str], references: Sequence[str], meteor: str = "auto"
) -> tuple[dict[str, float], dict[str, object]]:
    """BLEU-1..4, METEOR (``meteor`` or ``meteor_nltk``), ROUGE-L and CIDEr over the corpus.

    Texts are passed through ``coco_text`` first. Returns the metrics and a small dict describing how they were
    computed (for metrics.json's config).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not hypotheses:
        raise ValueError("no report pairs to score")
    hyps = [coco_text(text) for text in hypotheses]
    refs = [coco_text(text) for text in references]
    for i, ref in enumerate(refs):
        if not ref:
            raise ValueError(f"reference {i} is empty after cleaning; every pair needs a reference")

    variant = resolve_meteor(meteor)
    meteor_result: dict[str, object] = {}
    meteor_thread = None
    if variant == "jar":
        jar = Meteor15Jar()

        def run_meteor() -> None:
            try:
                meteor_result["score"] = jar.score(hyps, refs)[0]
            except BaseException as error:
                meteor_result["error"] = error
            finally:
                jar.close()

        meteor_thread = threading.Thread(target=run_meteor, daemon=True)
        meteor_thread.start()

    gts = {i: [ref] for i, ref in enumerate(refs)}
    res = {i: [hyp] for i, hyp in enumerate(hyps)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    metrics: dict[str, float] = {f"bleu_{n + 1}": float(bleu[n]) for n in range(4)}
    metrics["rouge_l"] = float(np.mean(rouge_l_scores(hyps, refs)))
    cider, _ = Cider().compute_score(gts, res)
    metrics["cider"] = float(cider)

    info: dict[str, object] = {"meteor": "meteor-1.5 jar" if variant == "jar" else "nltk"}
    if meteor_thread is not None:
        meteor_thread.join()
        if "error" in meteor_result:
            raise RuntimeError(f"METEOR 1.5 failed: {meteor_result['error']}") from meteor_result["error"]
        metrics["meteor"] = float(meteor_result["score"])
    else:
        scores, has_wordnet = meteor_nltk_scores(hyps, refs)
        metrics["meteor_nltk"] = float(np.mean(scores))
        info["meteor_nltk_wordnet"] = has_wordnet
    return metrics, info
