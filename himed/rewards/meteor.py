"""The two METEOR backends of the concept reward (HiMed-RL eq. 5): nltk's METEOR and the METEOR 1.5 jar.

``nltk`` (the default) computes exactly ``nltk.translate.meteor_score.single_meteor_score(reference, hypothesis)``
(nltk 3.10: alpha 0.9, beta 3, gamma 0.5; exact, then Porter-stem, then WordNet-synonym matching; greedy alignment
from the end of the hypothesis; chunks counted over the matches sorted by hypothesis position), reimplemented in
:class:`NltkMeteor` with per-word caches of stems and synonyms, because nltk re-stems every unmatched word and
re-reads WordNet for every pair; on 100-word reports that was most of the reward's time. Equality with nltk is
tested on many pairs: without WordNet, with a small synthetic one, and with the real WordNet 3.0. One nltk quirk
is kept on purpose: the synonym stage looks up the *stems* left over by the stem stage (nltk hands the stemmed
words on), not the surface words.

WordNet: nltk normally downloads it at run time; himed never downloads. When nltk can find WordNet on its data
path, synonyms are used (mode ``nltk-wordnet``). Offline, Debian's ``wordnet-base`` and ``wordnet-sense-index``
files (``/usr/share/wordnet``) work when copied, not symlinked (nltk 3.10 refuses files that resolve outside its
data path), to ``<nltk_data>/corpora/wordnet`` with a ``lexnames`` file added (Debian lacks it; see
tests/rewards/test_meteor.py). Otherwise a stand-in whose ``synsets()`` returns nothing leaves exact + stem
matching (mode ``nltk-exact-stem``), which for this English, single-reference, lower-cased setting only loses
synonym matches.
The mode is logged once per process and reported by ``ConceptReward.describe()`` and ``himed score``.

``meteor15`` runs the METEOR 1.5 jar that pycocoevalcap ships (``java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en
-norm``, the command of pycocoevalcap's ``Meteor``) in long-lived worker processes (:class:`Meteor15Pool`), with
what that wrapper lacks: inputs cleaned of newlines and ``|||`` (either one hangs the jar's line protocol), a lock
per worker, a reader thread and timeouts, a restart when a worker dies or stalls, a pool of 1-2 workers, and closing
at exit. Each pair gets its own ``SCORE`` line; the per-segment scores of one ``EVAL`` line are used, never the
corpus score (which is not the mean of the segment scores).

Why one file of ~420 lines: both backends and the WordNet lookup they share; ``NltkMeteor`` is kept step by
step comparable with nltk's code, which splitting it would hide.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import re
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

logger = logging.getLogger(__name__)

# nltk's single_meteor_score defaults (Lavie and Agarwal 2007), which the nltk backend must reproduce exactly.
ALPHA, BETA, GAMMA = 0.9, 3.0, 0.5

MODE_WORDNET = "nltk-wordnet"
MODE_EXACT_STEM = "nltk-exact-stem"
MODE_METEOR15 = "meteor-1.5"


class NoWordNet:
    """A WordNet stand-in with no synsets: nltk's METEOR then matches exact words and Porter stems only."""

    def synsets(self, lemma, *args, **kwargs):
        return []


@lru_cache(maxsize=1)
def find_wordnet():
    """``(wordnet, mode)``: nltk's WordNet when nltk can load it from its data path, else :class:`NoWordNet`.

    Never downloads. Logged once per process (the result is cached).
    """
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        wordnet.synsets("effusion")
    except LookupError:
        logger.info("METEOR (nltk): WordNet not found on nltk's data path; exact + stem matching (%s)", MODE_EXACT_STEM)
        return NoWordNet(), MODE_EXACT_STEM
    except Exception as error:  # a broken WordNet install (e.g. a missing lexnames file) must not stop scoring
        logger.warning(
            "METEOR (nltk): WordNet failed to load (%s: %s); exact + stem matching", type(error).__name__, error
        )
        return NoWordNet(), MODE_EXACT_STEM
    logger.info("METEOR (nltk): WordNet synonyms enabled (%s)", MODE_WORDNET)
    return wordnet, MODE_WORDNET


def _word_positions(words: Sequence[str]) -> dict[str, list[int]]:
    """Each word's positions in ``words``, ascending (read-only for callers)."""
    positions: dict[str, list[int]] = {}
    for j, word in enumerate(words):
        if word in positions:
            positions[word].append(j)
        else:
            positions[word] = [j]
    return positions


@lru_cache(maxsize=1024)
def _reference_positions(reference: tuple[str, ...]) -> dict[str, list[int]]:
    # Cached: in GRPO a group of completions shares one reference.
    return _word_positions(reference)


def _greedy_match(
    hypothesis: Sequence[str], reference: Sequence[str], positions: dict[str, list[int]] | None = None
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """nltk's ``_match_enums``: from the last hypothesis word back, take the last unused equal reference word.

    Written as one forward pass: for a word with ``h`` hypothesis and ``r`` reference occurrences, nltk's loop
    matches the last ``min(h, r)`` hypothesis occurrences to the last ``min(h, r)`` reference occurrences, in
    order; so hypothesis occurrence ``o`` (0-based) takes reference occurrence ``o + r - h`` when that is >= 0.
    Returns the matches as ``(hyp index, ref index)`` in hypothesis order and the unmatched indices of both.
    """
    if positions is None:
        positions = _word_positions(reference)
    left = Counter(hypothesis)  # occurrences of each word not yet visited, this one included
    matches = []
    unmatched_hypothesis = []
    for i, word in enumerate(hypothesis):
        available = positions.get(word)
        if available is None:
            unmatched_hypothesis.append(i)
            continue
        remaining = left[word]
        left[word] = remaining - 1
        index = len(available) - remaining
        if index < 0:
            unmatched_hypothesis.append(i)
        else:
            matches.append((i, available[index]))
    if len(matches) == len(reference):
        return matches, unmatched_hypothesis, []
    matched_reference = {j for _, j in matches}
    unmatched_reference = [j for j in range(len(reference)) if j not in matched_reference]
    return matches, unmatched_hypothesis, unmatched_reference


class NltkMeteor:
    """nltk's sentence METEOR on pre-tokenised text, with caches (see the module docstring).

    ``wordnet=None`` finds WordNet as :func:`find_wordnet` does; pass :class:`NoWordNet` (or any object with nltk's
    ``synsets(word)`` interface) to choose.
    """

    def __init__(self, wordnet=None, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA):
        if wordnet is None:
            wordnet, mode = find_wordnet()
        else:
            mode = MODE_EXACT_STEM if isinstance(wordnet, NoWordNet) else MODE_WORDNET
        self.wordnet = wordnet
        self.mode = mode
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        from nltk.stem.porter import PorterStemmer

        self._stemmer = PorterStemmer()  # nltk's default: NLTK_EXTENSIONS mode, deterministic, so cacheable
        self._stems: dict[str, str] = {}
        self._synonyms: dict[str, frozenset[str]] = {}

    def _stem(self, word: str) -> str:
        stem = self._stems.get(word)
        if stem is None:
            stem = self._stems[word] = self._stemmer.stem(word)
        return stem

    def _synonyms_of(self, word: str) -> frozenset[str]:
        synonyms = self._synonyms.get(word)
        if synonyms is None:
            names = {
                lemma.name()
                for synset in self.wordnet.synsets(word)
                for lemma in synset.lemmas()
                if "_" not in lemma.name()
            }
            synonyms = self._synonyms[word] = frozenset(names | {word})
        return synonyms

    def _synonym_match(self, hypothesis: list[str], reference: list[str]) -> list[tuple[int, int]]:
        """nltk's ``_enum_wordnetsyn_match``: the last unused reference word that is a hypothesis word's synonym."""
        positions: dict[str, list[int]] = {}
        for j, word in enumerate(reference):
            positions.setdefault(word, []).append(j)
        matches = []
        for i in range(len(hypothesis) - 1, -1, -1):
            best_j, best_word = -1, None
            for synonym in self._synonyms_of(hypothesis[i]):
                available = positions.get(synonym)
                if available and available[-1] > best_j:
                    best_j, best_word = available[-1], synonym
            if best_word is not None:
                positions[best_word].pop()
                matches.append((i, best_j))
        return matches

    def align(
        self, hypothesis: Sequence[str], reference: Sequence[str], lowercased: bool = False
    ) -> list[tuple[int, int]]:
        """The matched ``(hyp index, ref index)`` pairs, sorted by hypothesis index, as nltk's ``align_words``.

        nltk lower-cases every word first; ``lowercased=True`` says the words already are (himed's tokens).
        """
        if lowercased:
            hyp, ref = hypothesis, tuple(reference)
        else:
            hyp, ref = [w.lower() for w in hypothesis], tuple(w.lower() for w in reference)
        matches, hyp_left, ref_left = _greedy_match(hyp, ref, _reference_positions(ref))
        if hyp_left and ref_left:
            stem = self._stem
            # The stem stage sees only the words left over, and hands its stems on to the synonym stage.
            hyp_stems = [stem(hyp[i]) for i in hyp_left]
            ref_stems = [stem(ref[j]) for j in ref_left]
            stemmed, hyp_rest, ref_rest = _greedy_match(hyp_stems, ref_stems)
            matches += [(hyp_left[i], ref_left[j]) for i, j in stemmed]
            # Without WordNet every word's only "synonym" is itself, and equal stems were all taken above.
            if hyp_rest and ref_rest and self.mode == MODE_WORDNET:
                synonyms = self._synonym_match([hyp_stems[i] for i in hyp_rest], [ref_stems[j] for j in ref_rest])
                matches += [(hyp_left[hyp_rest[i]], ref_left[ref_rest[j]]) for i, j in synonyms]
            matches.sort()
        return matches

    def score(self, hypothesis: Sequence[str], reference: Sequence[str], lowercased: bool = False) -> float:
        """``nltk.translate.meteor_score.single_meteor_score(reference, hypothesis)`` (note the argument order)."""
        if not hypothesis or not reference:
            return 0.0
        matches = self.align(hypothesis, reference, lowercased)
        count = len(matches)
        if count == 0:
            return 0.0
        precision = count / len(hypothesis)
        recall = count / len(reference)
        fmean = (precision * recall) / (self.alpha * precision + (1 - self.alpha) * recall)
        chunks = 1
        for (h0, r0), (h1, r1) in zip(matches, matches[1:], strict=False):
            if h1 != h0 + 1 or r1 != r0 + 1:
                chunks += 1
        penalty = self.gamma * (chunks / count) ** self.beta
        return (1 - penalty) * fmean

    def score_batch(
        self, hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]], lowercased: bool = False
    ) -> list[float]:
        return [self.score(h, r, lowercased) for h, r in zip(hypotheses, references, strict=True)]

    def __getstate__(self):
        # The WordNet reader is found again after unpickling (another process may have its own data path).
        state = dict(self.__dict__)
        state["wordnet"] = None
        state["_synonyms"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.wordnet = NoWordNet() if self.mode == MODE_EXACT_STEM else find_wordnet()[0]
        if isinstance(self.wordnet, NoWordNet):
            self.mode = MODE_EXACT_STEM


# ---------------------------------------------------------------------------------------------------------------
# METEOR 1.5 (the jar pycocoevalcap ships)

_UNSAFE = re.compile(r"\|\|\||\s+")


def clean_for_meteor15(text: str) -> str:
    """One line the jar's ``|||``-separated protocol can read: no newline (it deadlocks the jar), no ``|||``."""
    return _UNSAFE.sub(" ", text.replace("|||", " ")).strip()


def meteor15_jar() -> str:
    """Path of pycocoevalcap's ``meteor-1.5.jar`` (its paraphrase table sits next to it, in ``data/``)."""
    import pycocoevalcap.meteor.meteor as coco_meteor

    return os.path.join(os.path.dirname(os.path.abspath(coco_meteor.__file__)), "meteor-1.5.jar")


def _write_quietly(stream, data: bytes) -> None:
    """Write and flush; a closed pipe (the worker died or was killed) is reported by the reads, not here."""
    try:
        stream.write(data)
        stream.flush()
    except (OSError, ValueError):
        pass


class Meteor15Worker:
    """One ``java -jar meteor-1.5.jar - - -stdio -l en -norm`` process, started on first use, restarted on death.

    Thread-safe (one lock); a reader thread drains the jar's stdout so that a long batch can be written at once
    without filling both pipes. ``timeout`` bounds the wait for each answer line; ``start_timeout`` the wait for
    the first line after a start (loading the JVM and the paraphrase table takes ~5 s on an idle machine, over a
    minute on a loaded one).
    """

    def __init__(
        self,
        jar: str | None = None,
        java: str = "java",
        memory: str = "2G",
        timeout: float = 60.0,
        start_timeout: float = 300.0,
    ):
        self.jar = jar or meteor15_jar()
        self.java = java
        self.memory = memory
        self.timeout = timeout
        self.start_timeout = start_timeout
        self._starting = False
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._lines: queue.Queue | None = None
        self.restarts = 0
        atexit.register(self.close)

    def _start(self) -> None:
        if shutil.which(self.java) is None:
            raise RuntimeError(f"METEOR 1.5 needs Java ('{self.java}' is not on PATH); use meteor: nltk instead")
        command = [self.java, "-jar", f"-Xmx{self.memory}", os.path.basename(self.jar)]
        command += ["-", "-", "-stdio", "-l", "en", "-norm"]
        self._process = subprocess.Popen(
            command,
            cwd=os.path.dirname(self.jar),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        lines: queue.Queue = queue.Queue()
        self._lines = lines
        stdout = self._process.stdout

        def drain():
            for line in iter(stdout.readline, b""):
                lines.put(line)
            lines.put(None)  # end of stream: the process died or was closed

        threading.Thread(target=drain, name="meteor15-reader", daemon=True).start()
        self._starting = True

    def _read(self) -> str:
        timeout = self.start_timeout if self._starting else self.timeout
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"METEOR 1.5 gave no answer within {timeout} s") from None
        self._starting = False
        if line is None:
            raise RuntimeError(f"METEOR 1.5 exited (code {self._process.poll()})")
        return line.decode("utf-8", errors="replace").strip()

    def _score_locked(self, pairs: list[tuple[str, str]]) -> list[float]:
        if self._process is None or self._process.poll() is not None:
            self._start()
        stdin = self._process.stdin
        # A batch is larger than the pipe buffer: writing it from this thread would block, with no timeout, while
        # the JVM starts or if it stalls. A writer thread does it; the timed reads below notice a stall, and
        # killing the process ends the writer (broken pipe).
        payload = "".join(f"SCORE ||| {reference} ||| {hypothesis}\n" for hypothesis, reference in pairs).encode()
        writer = threading.Thread(target=_write_quietly, args=(stdin, payload), name="meteor15-writer", daemon=True)
        writer.start()
        stats = [self._read() for _ in pairs]
        writer.join()
        _write_quietly(stdin, ("EVAL ||| " + " ||| ".join(stats) + "\n").encode())
        segment_scores = [float(self._read()) for _ in pairs]
        self._read()  # the corpus score, not used (it is not the mean of the segment scores)
        return segment_scores

    def score(self, hypotheses: Sequence[str], references: Sequence[str]) -> list[float]:
        """Per-pair METEOR 1.5 of cleaned ``hypotheses`` against ``references``; one retry on a fresh process."""
        pairs = [(clean_for_meteor15(h), clean_for_meteor15(r)) for h, r in zip(hypotheses, references, strict=True)]
        if not pairs:
            return []
        with self._lock:
            try:
                return self._score_locked(pairs)
            except (TimeoutError, RuntimeError, OSError, ValueError) as error:
                logger.warning("METEOR 1.5 worker failed (%s: %s); restarting it once", type(error).__name__, error)
                self._kill()
                self.restarts += 1
            try:
                return self._score_locked(pairs)
            except BaseException:
                self._kill()  # never leave a stalled JVM behind; the next call starts a fresh one
                raise

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.stdin.close()
        except OSError:
            pass
        process.kill()
        process.wait(timeout=10)

    def close(self) -> None:
        with self._lock:
            self._kill()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid


class Meteor15Pool:
    """1-2 :class:`Meteor15Worker` processes; a batch is split into contiguous slices scored in parallel."""

    def __init__(self, workers: int = 1, **worker_kwargs):
        if workers not in (1, 2):
            raise ValueError(f"meteor15 workers must be 1 or 2 (each JVM holds ~1-2 GB), got {workers}")
        self.workers = [Meteor15Worker(**worker_kwargs) for _ in range(workers)]

    def score(self, hypotheses: Sequence[str], references: Sequence[str]) -> list[float]:
        n = len(hypotheses)
        if len(self.workers) == 1 or n < 2:
            return self.workers[0].score(hypotheses, references)
        half = (n + 1) // 2
        with ThreadPoolExecutor(max_workers=2) as executor:
            first = executor.submit(self.workers[0].score, hypotheses[:half], references[:half])
            second = executor.submit(self.workers[1].score, hypotheses[half:], references[half:])
            return first.result() + second.result()

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
