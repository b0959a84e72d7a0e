"""METEOR backends: the nltk reimplementation equals nltk exactly; the METEOR 1.5 workers are robust."""

import logging
import pickle
import random
import shutil
import sys
import warnings
from pathlib import Path

import pytest
from nltk.translate.meteor_score import meteor_score, single_meteor_score

from himed.rewards import meteor as meteor_module
from himed.rewards.meteor import (
    MODE_EXACT_STEM,
    MODE_WORDNET,
    Meteor15Pool,
    Meteor15Worker,
    NltkMeteor,
    NoWordNet,
    clean_for_meteor15,
    find_wordnet,
)

# Words with shared stems (effusion/effusions, enlarge/enlarged/enlargement) and repeats, so that all three
# matching stages and the greedy tie-breaking are exercised.
VOCABULARY = (
    "the heart is normal in size no pleural effusion effusions left right lung lungs are clear mild moderate "
    "enlarged enlargement enlarge enlarging opacity opacities consolidation consolidated atelectasis atelectatic "
    "base bases basal pneumothorax there a of and with small large seen see seeing increased increasing"
).split()


def random_pairs(count, seed, max_len=40):
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        hyp = rng.choices(VOCABULARY, k=rng.randint(0, max_len))
        ref = rng.choices(VOCABULARY, k=rng.randint(0, max_len))
        pairs.append((hyp, ref))
    return pairs


def test_equals_nltk_without_wordnet_on_many_pairs():
    ours = NltkMeteor(wordnet=NoWordNet())
    assert ours.mode == MODE_EXACT_STEM
    for hyp, ref in random_pairs(1000, seed=0):
        expected = single_meteor_score(ref, hyp, wordnet=NoWordNet()) if hyp and ref else 0.0
        assert ours.score(hyp, ref) == pytest.approx(expected, abs=1e-12), (hyp, ref)
        assert ours.score(hyp, ref, lowercased=True) == pytest.approx(expected, abs=1e-12)
        shouted = [w.upper() for w in hyp]  # nltk lower-cases both sides first
        assert ours.score(shouted, ref) == pytest.approx(expected, abs=1e-12)
    # nltk's documented example (uppercase words are lowered as nltk's preprocess does)
    hyp = "It is a guide to action which ensures that the military always obeys the commands of the party".split()
    ref = "It is a guide to action that ensures that the military will forever heed Party commands".split()
    assert ours.score(hyp, ref) == pytest.approx(meteor_score([ref], hyp, wordnet=NoWordNet()), abs=1e-12)


class _Lemma:
    def __init__(self, name):
        self._name = name

    def name(self):
        return self._name


class _Synset:
    def __init__(self, names):
        self._lemmas = [_Lemma(n) for n in names]

    def lemmas(self):
        return self._lemmas


class FakeWordNet:
    """A tiny WordNet with nltk's interface: synonym groups cut across stems, and a multi-word lemma to skip."""

    GROUPS = [
        ["heart", "cardiac", "ticker"],
        ["lung", "pulmonary", "lungs"],
        ["clear", "normal", "unclouded"],
        ["effus", "effusion", "fluid"],
        ["larg", "large", "big", "enlarged"],
        ["see", "seen", "view", "pleural_effusion"],
        ["base", "bases", "basal"],
    ]

    def synsets(self, word, *args, **kwargs):
        return [_Synset(group) for group in self.GROUPS if word in group]


def test_equals_nltk_with_a_wordnet_on_many_pairs():
    fake = FakeWordNet()
    ours = NltkMeteor(wordnet=fake)
    assert ours.mode == MODE_WORDNET
    vocabulary = [*VOCABULARY, "cardiac", "pulmonary", "fluid", "big", "view", "unclouded", "ticker"]
    rng = random.Random(1)
    synonym_matches = 0
    for _ in range(1000):
        hyp = rng.choices(vocabulary, k=rng.randint(1, 30))
        ref = rng.choices(vocabulary, k=rng.randint(1, 30))
        expected = single_meteor_score(ref, hyp, wordnet=fake)
        assert ours.score(hyp, ref) == pytest.approx(expected, abs=1e-12), (hyp, ref)
        synonym_matches += expected != single_meteor_score(ref, hyp, wordnet=NoWordNet())
    assert synonym_matches > 100  # the synonym stage was really exercised


def test_identical_disjoint_and_empty():
    ours = NltkMeteor(wordnet=NoWordNet())
    text = "no pleural effusion or pneumothorax".split()
    # one chunk: penalty 0.5 * (1/5)^3
    assert ours.score(text, text) == pytest.approx(1 - 0.5 * (1 / 5) ** 3)
    assert ours.score(["cat"], ["dog"]) == 0.0
    assert ours.score([], text) == 0.0
    assert ours.score(text, []) == 0.0


def test_stem_matches_count():
    ours = NltkMeteor(wordnet=NoWordNet())
    assert ours.score(["effusions"], ["effusion"]) > 0
    assert ours.align(["small", "effusions"], ["effusion", "small"]) == [(0, 1), (1, 0)]


def test_find_wordnet_reports_a_mode_and_logs_once(caplog):
    find_wordnet.cache_clear()
    with caplog.at_level(logging.INFO, logger="himed.rewards.meteor"):
        first = find_wordnet()
        second = find_wordnet()
    assert first is second
    assert first[1] in (MODE_WORDNET, MODE_EXACT_STEM)
    assert len([r for r in caplog.records if "METEOR (nltk)" in r.getMessage()]) == 1
    assert NltkMeteor().mode == first[1]


def test_missing_wordnet_falls_back(monkeypatch):
    import nltk.corpus

    class Missing:
        def ensure_loaded(self):
            raise LookupError("Resource wordnet not found")

    find_wordnet.cache_clear()
    monkeypatch.setattr(nltk.corpus, "wordnet", Missing())
    try:
        wordnet, mode = find_wordnet()
        assert mode == MODE_EXACT_STEM and isinstance(wordnet, NoWordNet)
    finally:
        find_wordnet.cache_clear()


def test_nltk_meteor_pickles():
    ours = NltkMeteor(wordnet=NoWordNet())
    ours.score(["effusions"], ["effusion"])
    clone = pickle.loads(pickle.dumps(ours))
    assert clone.mode == MODE_EXACT_STEM
    assert clone.score(["effusions", "left"], ["effusion", "left"]) == ours.score(
        ["effusions", "left"], ["effusion", "left"]
    )


def test_clean_for_meteor15():
    assert clean_for_meteor15("a\nb ||| c\r\n\td  ") == "a b c d"
    assert clean_for_meteor15("x|||y") == "x y"
    assert "\n" not in clean_for_meteor15("\n\n") and clean_for_meteor15("\n\n") == ""


def test_pool_rejects_bad_sizes():
    with pytest.raises(ValueError, match="1 or 2"):
        Meteor15Pool(workers=3)


FAKE_JAR = """#!{python}
# Speaks the METEOR 1.5 -stdio protocol: SCORE -> a stats line (here: hypothesis words and its first word);
# EVAL -> one score per stats line, then a corpus score. A hypothesis word "hang" stalls it; "die" kills it.
import sys
for line in sys.stdin:
    fields = [f.strip() for f in line.rstrip("\\n").split("|||")]
    if fields[0] == "SCORE":
        words = fields[-1].split()
        if "hang" in words:
            import time; time.sleep(60)
        if "die" in words:
            sys.exit(3)
        print(f"{{len(words)}} {{len(fields)}}", flush=True)
    elif fields[0] == "EVAL":
        scores = [float(stat.split()[0]) / 10 for stat in fields[1:]]
        for score in scores:
            print(score, flush=True)
        print(sum(scores) / len(scores), flush=True)
"""


@pytest.fixture
def fake_java(tmp_path):
    path = tmp_path / "fake-java"
    path.write_text(FAKE_JAR.format(python=sys.executable))
    path.chmod(0o755)
    return str(path)


def test_worker_protocol_with_a_fake_jar(fake_java):
    worker = Meteor15Worker(java=fake_java, timeout=10, start_timeout=10)
    try:
        # per-segment scores in order; newlines and ||| cleaned (a stray ||| would add a field: the 2nd number)
        scores = worker.score(["a b", "one\ntwo ||| three", "x"], ["r", "r\nr", "r"])
        assert scores == [0.2, 0.3, 0.1]
        assert worker.score([], []) == []
        big = worker.score(["w " * 50] * 600, ["r"] * 600)  # larger than a pipe buffer in one go
        assert big == [5.0] * 600
    finally:
        worker.close()
    assert worker.pid is None


def test_worker_restarts_after_a_death(fake_java):
    worker = Meteor15Worker(java=fake_java, timeout=10, start_timeout=10)
    try:
        assert worker.score(["a"], ["r"]) == [0.1]
        first_pid = worker.pid
        worker._process.kill()
        worker._process.wait()
        assert worker.score(["a b"], ["r"]) == [0.2]  # detected as dead before writing: a plain restart
        assert worker.pid != first_pid
        with pytest.raises(RuntimeError, match="exited"):
            worker.score(["die"], ["r"])  # dies on this input twice: the error reaches the caller (batch -> None)
        assert worker.restarts >= 1 and worker.pid is None
        assert worker.score(["a"], ["r"]) == [0.1]  # and the next batch starts a fresh worker
    finally:
        worker.close()


def test_worker_times_out_on_a_stall_and_kills_it(fake_java):
    worker = Meteor15Worker(java=fake_java, timeout=0.5, start_timeout=0.5)
    try:
        with pytest.raises(TimeoutError):
            worker.score(["hang"], ["r"])
        assert worker.pid is None  # the stalled process was killed, not left behind
    finally:
        worker.close()


def test_pool_of_two_splits_and_keeps_order(fake_java):
    pool = Meteor15Pool(workers=2, java=fake_java, timeout=10, start_timeout=10)
    try:
        hyps = ["w " * k for k in range(1, 8)]
        assert pool.score(hyps, ["r"] * 7) == pytest.approx([k / 10 for k in range(1, 8)])
        assert all(worker.pid is not None for worker in pool.workers)
    finally:
        pool.close()


def test_concept_reward_refuses_meteor15_without_java(monkeypatch):
    import himed.rewards.concept as concept

    monkeypatch.setattr(concept.shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match="Java"):
        concept.ConceptReward(meteor="meteor15")


def test_missing_java_is_a_clear_error():
    worker = Meteor15Worker(java="no-such-java-binary")
    with pytest.raises(RuntimeError, match="Java"):
        worker.score(["a"], ["a"])


needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR 1.5 needs Java")


@pytest.mark.slow
@needs_java
def test_meteor15_equals_pycocoevalcap_per_segment_and_survives_newlines():
    from pycocoevalcap.meteor.meteor import Meteor

    hyps = ["the heart is normal in size", "no pleural effusion", "mild cardiomegaly", "lungs clear"]
    refs = ["heart size is normal", "there is no effusion", "the heart is mildly enlarged", "the lungs are clear"]
    coco = Meteor()
    try:
        _, expected = coco.compute_score({i: [r] for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)})
    finally:
        coco.__del__()
    pool = Meteor15Pool(workers=2)
    try:
        assert pool.score(hyps, refs) == pytest.approx(expected, abs=1e-9)
        # newlines and ||| would hang pycocoevalcap's wrapper; cleaned here, and the worker keeps answering
        dirty = pool.score(["the heart\nis normal ||| in size"], ["heart size\n\nis normal"])
        assert dirty == pytest.approx(expected[:1], abs=1e-9)
        assert pool.score(hyps[:1], refs[:1]) == pytest.approx(expected[:1], abs=1e-9)
    finally:
        pool.close()


@pytest.mark.slow
@needs_java
def test_meteor15_restarts_a_dead_worker():
    worker = Meteor15Worker()
    try:
        first = worker.score(["no pleural effusion"], ["there is no effusion"])
        worker._process.kill()
        worker._process.wait()
        assert worker.score(["no pleural effusion"], ["there is no effusion"]) == first
        assert worker.restarts == 0 or worker.restarts == 1
        pid = worker.pid
        worker.close()
        assert worker.pid is None and pid is not None
    finally:
        worker.close()


def test_module_imports_without_nltk_work():
    # the registry imports every module under himed.rewards; importing this one must stay cheap
    assert meteor_module.ALPHA == 0.9 and meteor_module.BETA == 3.0 and meteor_module.GAMMA == 0.5


DEBIAN_WORDNET = Path("/usr/share/wordnet")


@pytest.fixture(scope="module")
def debian_wordnet(tmp_path_factory):
    """Debian's WordNet 3.0 (packages ``wordnet-base`` and ``wordnet-sense-index``) as an nltk reader, if installed.

    nltk reads the same database files; Debian lacks ``lexnames``, which nltk only uses for ``Synset.lexname()``,
    so placeholder names with the right numbering are written. nltk only opens corpora under its data path, so the
    files are copied there (a temporary entry of ``nltk.data.path``).
    """
    if not all((DEBIAN_WORDNET / name).exists() for name in ("data.noun", "index.sense")):
        pytest.skip("Debian's wordnet-base and wordnet-sense-index are not installed")
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    root = tmp_path_factory.mktemp("nltk_data")
    target = root / "corpora" / "wordnet"
    target.mkdir(parents=True)
    for source in DEBIAN_WORDNET.iterdir():
        if source.is_file():
            shutil.copyfile(source, target / source.name)
    (target / "lexnames").write_text("".join(f"{i:02d}\tlexname{i:02d}\t0\n" for i in range(45)))
    nltk.data.path.insert(0, str(root))
    try:
        with warnings.catch_warnings():  # "multilingual functions are not available": no Open Multilingual Wordnet
            warnings.simplefilter("ignore", UserWarning)
            reader = WordNetCorpusReader(str(target), None)
        yield reader
    finally:
        nltk.data.path.remove(str(root))


@pytest.mark.slow  # copying and loading WordNet takes 5-25 s
def test_equals_nltk_with_the_real_wordnet(debian_wordnet):
    ours = NltkMeteor(wordnet=debian_wordnet)
    assert ours.mode == MODE_WORDNET
    vocabulary = [*VOCABULARY, "big", "bigger", "cardiac", "pulmonary", "fluid", "unclouded", "view", "area", "region"]
    rng = random.Random(2)
    differs = 0
    for _ in range(300):
        hyp = rng.choices(vocabulary, k=rng.randint(1, 30))
        ref = rng.choices(vocabulary, k=rng.randint(1, 30))
        expected = single_meteor_score(ref, hyp, wordnet=debian_wordnet)
        assert ours.score(hyp, ref) == pytest.approx(expected, abs=1e-12), (hyp, ref)
        differs += expected != single_meteor_score(ref, hyp, wordnet=NoWordNet())
    assert differs > 0  # synonyms (e.g. large/big) really matched
