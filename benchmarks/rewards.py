"""Speed of the CPU rewards on a GRPO-sized batch, against a naive pair-by-pair path measured in the same run.

    OMP_NUM_THREADS=1 python benchmarks/rewards.py [--n 512] [--group-size 8] [--repeats 5] [--output FILE]

Scores ``n`` completions of about 100 words against their references with every CPU reward (token, concept with
nltk METEOR, format, clinical with the rule labeler, consistency), built from the registry as a trainer builds
them, and prints per-reward and total wall time. The naive path computes the same formulas pair by pair in one
process, the way one would write them first: the token reward in plain Python (Counters), ROUGE-L with
``rouge_score.RougeScorer(["rougeL"]).score``, METEOR with ``nltk.translate.meteor_score.meteor_score``, the
keyword bonus by testing each keyword against the candidate, the format check per completion, and the labeler
called once per report (candidate, reference, finding and impression sections). The benchmark also checks that the
two paths give the same values (max absolute difference per reward).

Data: seeded and procedural. Sentences come from the demo report generator (:func:`himed.data.demo.report_corpus`),
half of them (``--variation``) varied by a word swap or a trailing qualifier, since the generator has only ~200
distinct sentences and caches keyed by sentence would otherwise make the batch unrealistically cheap; each
reference strings sentences to about 100 words; each completion keeps, swaps or drops the reference's
sentences and fills up to about 100 words, in the recipe's tagged format (10% malformed, untagged, so the format
and consistency rewards see failures). Completions come in groups of ``--group-size`` per reference, as GRPO
generates them (``num_generations`` 8); ``--group-size 1`` gives every completion its own reference.

Wall time is what the targets are about; CPU time (``*_cpu``) is printed next to it because other processes on a
shared machine inflate wall time (the load average is recorded). Two timings per path are reported: ``cold``
(fresh reward objects and empty caches: the first step of a run) and ``steady`` (the rewards have already scored
one other batch, as at every later training step; whole-text caches are emptied so that no text of the timed batch
is cached, while caches of parts of texts, METEOR's stems and the labeler's sentences, keep what the other batch
put there). Each is the median of ``--repeats`` runs. Module imports happen once before any timing (they are a
start-up cost of the process, not of a step).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

REWARDS = ("token", "concept", "format", "clinical", "consistency")
KWARGS = {"concept": {"meteor": "nltk"}, "clinical": {"labeler": "rules"}}


# ---------------------------------------------------------------------------------------------------------------
# Data


def sentence_bank(seed: int) -> list[str]:
    from himed.data.demo import report_corpus

    sentences = set()
    for report in report_corpus(3000, seed):
        sentences.update(s.strip() for s in re.split(r"(?<=\.)\s+", report) if s.strip().endswith("."))
    return sorted(sentences)


def _words(sentences: list[str]) -> int:
    return sum(len(s.split()) for s in sentences)


def _fill(sentences: list[str], draw, words: int) -> list[str]:
    while _words(sentences) < words:
        sentences.append(draw())
    return sentences


# Word swaps and trailing qualifiers that keep a templated sentence radiological while making it new text: the
# demo generator has only ~200 distinct sentences, and caches keyed by sentence (the rule labeler's) would make
# such a batch unrealistically cheap. Real completions repeat sentences too, but far less than 200 per batch.
_SWAPS = {
    "left": "right", "right": "left", "mild": "moderate", "moderate": "mild", "small": "large", "large": "small",
    "no": "a", "both": "the", "normal": "enlarged", "upper": "lower", "lower": "upper", "is": "remains",
}  # fmt: skip
_QUALIFIERS = (
    "compared with the prior study", "on the frontal view", "since the prior radiograph", "unchanged",
    "new since the prior exam", "at the lung bases", "in the retrocardiac region", "without change",
    "slightly improved", "on this portable examination", "as before", "when compared to yesterday",
)  # fmt: skip


def vary(sentence: str, rng: random.Random) -> str:
    """A variant of a report sentence: one word swapped and/or a qualifier added before the period."""
    words = sentence.rstrip(".").split()
    swappable = [i for i, w in enumerate(words) if w.lower() in _SWAPS]
    if swappable and rng.random() < 0.7:
        i = rng.choice(swappable)
        swapped = _SWAPS[words[i].lower()]
        words[i] = swapped.capitalize() if words[i][0].isupper() else swapped
    if rng.random() < 0.6 or not swappable:
        words.append(rng.choice(_QUALIFIERS))
    return " ".join(words) + "."


def make_batch(
    n: int, group_size: int, seed: int, words: int = 100, variation: float = 0.5
) -> tuple[list[str], list[str]]:
    """``n`` tagged completions and their references (``n / group_size`` distinct references).

    ``variation``: the probability that a sampled sentence is replaced by a :func:`vary` variant.
    """
    rng = random.Random(seed)
    bank = sentence_bank(seed)

    def draw() -> str:
        sentence = rng.choice(bank)
        return vary(sentence, rng) if rng.random() < variation else sentence

    completions, references = [], []
    while len(completions) < n:
        reference = _fill([], draw, words)
        for _ in range(group_size):
            kept = []
            for sentence in reference:
                roll = rng.random()
                if roll < 0.7:
                    kept.append(sentence)
                elif roll < 0.85:
                    kept.append(draw())
            kept = _fill(kept, draw, words)
            if len(kept) > 2 and rng.random() < 0.3:  # a light reordering
                i = rng.randrange(len(kept) - 1)
                kept[i], kept[i + 1] = kept[i + 1], kept[i]
            cut = len(kept) - rng.randint(1, 2)
            finding, impression = " ".join(kept[:cut]), " ".join(kept[cut:])
            if rng.random() < 0.1:
                completion = f"{finding} {impression}"  # malformed: no tags
            else:
                think = "Reviewing the frontal view for lines, heart, lungs and pleura."
                completion = (
                    f"<think>{think}</think>\n<finding>{finding}</finding>\n<impression>{impression}</impression>"
                )
            completions.append(completion)
            references.append(" ".join(reference))
    return completions[:n], references[:n]


# ---------------------------------------------------------------------------------------------------------------
# The fast path: the registered rewards


def clear_text_caches(sentences: bool = True) -> None:
    """Empty the whole-text caches of the token/concept rewards and, with ``sentences``, the rule labeler's
    per-sentence cache (a cold start has it empty; in steady state it legitimately holds earlier batches' sentences,
    like the METEOR stem cache holds their words)."""
    from himed.clinical import rules
    from himed.rewards import concept, meteor, tokens

    if sentences:
        # Private to the labeler's module: cleared when present, so that "cold" stays cold if it changes.
        sentence_cache = getattr(rules, "_analyse_cached", None)
        if sentence_cache is not None:
            sentence_cache.cache_clear()

    tokens.clear_caches()
    concept._match_masks.cache_clear()
    meteor._reference_positions.cache_clear()


def build_rewards() -> dict:
    from himed.rewards.registry import build_reward

    return {name: build_reward(name, KWARGS.get(name))[0] for name in REWARDS}


def run_fast(rewards: dict, completions, references) -> tuple[dict, dict]:
    seconds, values = {}, {}
    for name, reward in rewards.items():
        start, cpu = time.perf_counter(), time.process_time()
        values[name] = reward(completions, reference=references)
        seconds[name] = (time.perf_counter() - start, time.process_time() - cpu)
    return seconds, values


# ---------------------------------------------------------------------------------------------------------------
# The naive path: the same formulas, pair by pair


class NaivePath:
    def __init__(self):
        from nltk.translate.meteor_score import meteor_score
        from rouge_score.rouge_scorer import RougeScorer

        from himed.clinical.labelers import get_labeler
        from himed.rewards.concept import read_keywords
        from himed.rewards.meteor import find_wordnet

        self.meteor_score = meteor_score
        self.wordnet = find_wordnet()[0]
        self.rouge = RougeScorer(["rougeL"])
        self.keywords = read_keywords()
        self.labeler = get_labeler("rules")

    @staticmethod
    def tokens(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    def token(self, candidate: str, reference: str) -> float:
        c, r = self.tokens(candidate), self.tokens(reference)
        if not c:
            return 0.0
        total = 0.0
        for n in range(1, 5):
            cand = Counter(tuple(c[i : i + n]) for i in range(len(c) - n + 1))
            ref = Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1))
            if cand:
                total += 0.25 * sum(min(k, ref[g]) for g, k in cand.items()) / sum(cand.values())
        return min(1.0, math.exp(1 - len(r) / len(c))) * total

    def concept(self, candidate: str, reference: str) -> float:
        c, r = self.tokens(candidate), self.tokens(reference)
        if not c:
            return 0.0
        rouge = self.rouge.score(reference, candidate)["rougeL"].fmeasure
        meteor = self.meteor_score([r], c, wordnet=self.wordnet)
        padded = " " + " ".join(c) + " "
        found = {k for k in self.keywords if " " + k + " " in padded}
        return rouge + meteor + min(0.02 * len(found), 0.2)

    def format(self, completion: str) -> float:
        from himed.data.sections import parse_strict

        return 1.0 if parse_strict(completion) is not None else -1.0

    def clinical(self, candidate: str, reference: str) -> float:
        from himed.clinical.observations import FIVE_OBSERVATIONS

        [a] = self.labeler.label([candidate])
        [b] = self.labeler.label([reference])
        agree = sum((a.get(o) in (1, -1)) == (b.get(o) in (1, -1)) for o in FIVE_OBSERVATIONS)
        return agree / len(FIVE_OBSERVATIONS)

    def consistency(self, completion: str) -> float | None:
        from himed.clinical.observations import CHEXBERT_OBSERVATIONS, NO_FINDING
        from himed.data.sections import parse_strict

        parsed = parse_strict(completion)
        if parsed is None:
            return None
        [f] = self.labeler.label([parsed["finding"]])
        [i] = self.labeler.label([parsed["impression"]])
        clashes = sum(
            f.get(o) in (0, 1) and i.get(o) in (0, 1) and f[o] != i[o] for o in CHEXBERT_OBSERVATIONS if o != NO_FINDING
        )
        return 1.0 / (1.0 + clashes)

    def run(self, completions, references) -> tuple[dict, dict]:
        from himed.data.sections import extract_lenient

        seconds, values = {}, {}
        pairs = list(zip(completions, references, strict=True))
        jobs = {
            "token": lambda c, r: self.token(extract_lenient(c), r),
            "concept": lambda c, r: self.concept(extract_lenient(c), r),
            "format": lambda c, r: self.format(c),
            "clinical": lambda c, r: self.clinical(extract_lenient(c), r),
            "consistency": lambda c, r: self.consistency(c),
        }
        for name, job in jobs.items():
            start, cpu = time.perf_counter(), time.process_time()
            values[name] = [job(c, r) for c, r in pairs]
            seconds[name] = (time.perf_counter() - start, time.process_time() - cpu)
        return seconds, values


# ---------------------------------------------------------------------------------------------------------------


def max_difference(a: list, b: list) -> float:
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        if (x is None) != (y is None):
            return math.inf
        if x is not None:
            worst = max(worst, abs(x - y))
    return worst


def median_times(runs: list[dict], clock: int) -> dict:
    """Median over runs of each reward's seconds and of the total; ``clock`` 0 = wall time, 1 = CPU time."""
    out = {name: round(statistics.median(run[name][clock] for run in runs), 4) for name in runs[0]}
    out["total"] = round(statistics.median(sum(t[clock] for t in run.values()) for run in runs), 4)
    return out


def markdown_table(results: dict) -> str:
    """The README table of a results JSON (so the README is generated from the recorded file, not retyped)."""
    seconds = results["seconds"]
    lines = [
        "| reward | cold fast (s) | cold naive (s) | steady fast (s) | steady naive (s) | steady fast CPU (s) |"
        " steady naive CPU (s) | max abs difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in (*REWARDS, "total"):
        difference = results["max_abs_difference"].get(name)
        cells = [seconds[s][p][name] for s, p in (("cold", "fast"), ("cold", "naive"), ("steady", "fast"))]
        cells += [seconds["steady"][p][name] for p in ("naive", "fast_cpu", "naive_cpu")]
        shown = "" if difference is None else f"{difference:.0e}"
        row = " | ".join(f"{c:.3f}" for c in cells)
        label = f"**{name}**" if name == "total" else name
        lines.append(f"| {label} | {row} | {shown} |")
    lines.append(
        f"| speed-up (naive / fast) | {seconds['cold']['speedup_total']:.2f}x | | "
        f"{seconds['steady']['speedup_total']:.2f}x | | | | |"
    )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=512, help="completions in the batch")
    parser.add_argument("--group-size", type=int, default=8, help="completions per reference (GRPO num_generations)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per path and setting (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--variation", type=float, default=0.5, help="probability that a sampled sentence is a varied (new) one"
    )
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument("--table", default=None, help="only print the markdown table of this results JSON")
    args = parser.parse_args(argv)
    if args.table:
        results = json.loads(Path(args.table).read_text())
        print(markdown_table(results))
        return results

    load_before = os.getloadavg()
    completions, references = make_batch(args.n, args.group_size, args.seed, variation=args.variation)
    warmup_completions, warmup_references = make_batch(args.n, args.group_size, args.seed + 1, variation=args.variation)
    sentences = {s for text in completions + references for s in re.split(r"(?<=\.)\s+", re.sub(r"<[^>]+>", " ", text))}
    from himed.data.report_tokens import tokenize
    from himed.data.sections import extract_lenient

    candidate_words = statistics.mean(len(tokenize(extract_lenient(c))) for c in completions)
    reference_words = statistics.mean(len(tokenize(r)) for r in references)

    # One-time imports (nltk, rouge_score, the labeler's patterns, WordNet detection) happen here, untimed: "cold"
    # means fresh reward objects and empty caches, not a fresh interpreter.
    build_rewards()["concept"].describe()
    NaivePath()

    fast = {"cold": [], "steady": []}
    naive = {"cold": [], "steady": []}
    values_fast = values_naive = None
    for _ in range(args.repeats):
        clear_text_caches()
        rewards = build_rewards()
        seconds, values_fast = run_fast(rewards, completions, references)
        fast["cold"].append(seconds)
        clear_text_caches()
        rewards = build_rewards()
        run_fast(rewards, warmup_completions, warmup_references)
        clear_text_caches(sentences=False)
        fast["steady"].append(run_fast(rewards, completions, references)[0])

        clear_text_caches()
        path = NaivePath()
        seconds, values_naive = path.run(completions, references)
        naive["cold"].append(seconds)
        clear_text_caches()
        path.run(warmup_completions, warmup_references)
        naive["steady"].append(path.run(completions, references)[0])

    concept = build_rewards()["concept"]
    results = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/rewards.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "n": args.n,
        "group_size": args.group_size,
        "distinct_references": len(set(references)),
        "repeats": args.repeats,
        "seed": args.seed,
        "variation": args.variation,
        "distinct_sentences": len(sentences),
        "candidate_tokens_mean": round(candidate_words, 1),
        "reference_tokens_mean": round(reference_words, 1),
        "meteor_mode": concept.describe()["meteor_mode"],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "seconds": {
            setting: {
                "fast": median_times(fast[setting], 0),
                "naive": median_times(naive[setting], 0),
                "fast_cpu": median_times(fast[setting], 1),
                "naive_cpu": median_times(naive[setting], 1),
            }
            for setting in ("cold", "steady")
        },
        "max_abs_difference": {name: max_difference(values_fast[name], values_naive[name]) for name in REWARDS},
    }
    for setting in ("cold", "steady"):
        timing = results["seconds"][setting]
        results["seconds"][setting]["speedup_total"] = round(timing["naive"]["total"] / timing["fast"]["total"], 2)

    print(
        f"{args.n} completions (~{candidate_words:.0f} tokens) vs {len(set(references))} references "
        f"(~{reference_words:.0f} tokens), {len(sentences)} distinct sentences; METEOR mode {results['meteor_mode']}; "
        f"median of {args.repeats}; "
        f"load average {load_before[0]:.1f} before, {results['load_average_after'][0]:.1f} after"
    )
    columns = [(s, p) for s in ("cold", "steady") for p in ("fast", "naive", "fast_cpu", "naive_cpu")]
    print(f"{'reward':<12}" + "".join(f"{s + ' ' + p:>18}" for s, p in columns))
    for name in (*REWARDS, "total"):
        print(f"{name:<12}" + "".join(f"{results['seconds'][s][p][name]:>17.3f}s" for s, p in columns))
    print(
        "speed-up (naive / fast, total): "
        + ", ".join(f"{s} {results['seconds'][s]['speedup_total']:.2f}x" for s in ("cold", "steady"))
    )
    print("max |fast - naive|: " + ", ".join(f"{k} {v:.1e}" for k, v in results["max_abs_difference"].items()))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
