"""RadGraph worker: runs in the user's separate RadGraph environment; imports only the standard library and radgraph.

Kept compatible with Python 3.8 (radgraph's minimum).

Started by ``himed.clinical.radgraph.RadGraphBridge`` as ``PYTHON radgraph_worker.py --model-type radgraph-xl
[--model-cache-dir DIR] [--cuda N] [--cache-size N]``. It speaks JSON lines:

- on start, one line ``{"ready": true, "radgraph_version": ..., "model_type": ...}`` or
  ``{"ready": false, "kind": "import" | "model", "error": ...}`` (then it exits);
- per request ``{"id": N, "op": "score", "hyps": [...], "refs": [...]}`` it answers ``{"id": N, "scores":
  [[simple, partial, complete] | null, ...]}``, the values of ``radgraph.F1RadGraph(reward_level="all")`` for each
  pair (0, 0, 0 when either text is empty, as F1RadGraph does); ``null`` for a pair whose annotation failed;
- ``{"id": N, "op": "annotate", "texts": [...]}`` answers ``{"id": N, "annotations": [... | null]}`` (RadGraph's
  per-report annotation dicts);
- a request that fails as a whole gets ``{"id": N, "error": ...}``; the worker keeps serving.

Departure from ``F1RadGraph``: annotations are cached per text (LRU), so a reference shared by a GRPO group is
annotated once. RadGraph annotates each report on its own (its data loader uses batch size 1), so caching does not
change any value. The protocol stream is the original stdout; everything radgraph prints goes to stderr.
"""

import argparse
import json
import os
import sys
import traceback
from collections import OrderedDict

# Run as a script from himed/clinical/, Python puts that folder first on sys.path, where himed's own radgraph.py
# would shadow the radgraph package. Drop it before importing radgraph.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]


def _protocol_stream():
    """The real stdout for protocol lines; fd 1 and sys.stdout are pointed at stderr so stray prints cannot mix in."""
    stream = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return stream


def _send(stream, message):
    stream.write(json.dumps(message) + "\n")
    stream.flush()


class _Annotator:
    def __init__(self, radgraph, cache_size):
        self.radgraph = radgraph
        self.cache = OrderedDict()
        self.cache_size = cache_size

    def annotate(self, texts):
        """Annotation dict per text (None where RadGraph dropped the report), cached by text."""
        missing = [text for text in dict.fromkeys(texts) if text not in self.cache]
        if missing:
            results = self.radgraph(missing)
            for index, text in enumerate(missing):
                self.cache[text] = results.get(str(index))
        out = []
        for text in texts:
            self.cache.move_to_end(text)
            out.append(self.cache[text])
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return out


def _score(annotator, compute_reward, hyps, refs):
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    # F1RadGraph scores a pair with an empty text as 0 without annotating it. (No zip(strict=): the user's
    # environment may run Python 3.8, which radgraph supports.)
    pairs = [(hyp, ref) for hyp, ref in zip(hyps, refs) if hyp and ref]  # noqa: B905
    texts = [text for pair in pairs for text in pair]
    annotations = dict(zip(texts, annotator.annotate(texts))) if texts else {}  # noqa: B905
    scores = []
    for hyp, ref in zip(hyps, refs):  # noqa: B905
        if not hyp or not ref:
            scores.append([0.0, 0.0, 0.0])
            continue
        hyp_annotation, ref_annotation = annotations[hyp], annotations[ref]
        if hyp_annotation is None or ref_annotation is None:
            scores.append(None)
            continue
        scores.append([float(value) for value in compute_reward(hyp_annotation, ref_annotation, "all")])
    return scores


def _check_texts(request, key):
    texts = request.get(key)
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise ValueError(f"'{key}' must be a list of strings")
    return texts


def main(argv=None):
    parser = argparse.ArgumentParser(description="RadGraph worker for himed (JSON lines on stdin/stdout)")
    parser.add_argument("--model-type", default="radgraph-xl")
    parser.add_argument("--model-cache-dir", default=None)
    parser.add_argument("--cuda", type=int, default=-1, help="CUDA device index, -1 for CPU")
    parser.add_argument("--cache-size", type=int, default=4096, help="annotations kept in memory")
    args = parser.parse_args(argv)
    protocol = _protocol_stream()

    try:
        import importlib.metadata

        from radgraph import RadGraph
        from radgraph.rewards import compute_reward

        version = importlib.metadata.version("radgraph")
    except Exception as error:  # noqa: BLE001 - any import failure is reported the same way
        _send(protocol, {"ready": False, "kind": "import", "error": f"{type(error).__name__}: {error}"})
        return 3
    try:
        radgraph = RadGraph(model_type=args.model_type, model_cache_dir=args.model_cache_dir, cuda=args.cuda)
    except Exception as error:  # noqa: BLE001 - radgraph raises bare Exception and asserts
        traceback.print_exc()
        _send(protocol, {"ready": False, "kind": "model", "error": f"{type(error).__name__}: {error}"})
        return 4
    annotator = _Annotator(radgraph, args.cache_size)
    _send(protocol, {"ready": True, "radgraph_version": version, "model_type": args.model_type})

    for line in sys.stdin:
        if not line.strip():
            continue
        request_id = None
        try:
            request = json.loads(line)
            request_id = request.get("id")
            op = request.get("op")
            if op == "score":
                scores = _score(annotator, compute_reward, _check_texts(request, "hyps"), _check_texts(request, "refs"))
                _send(protocol, {"id": request_id, "scores": scores})
            elif op == "annotate":
                _send(protocol, {"id": request_id, "annotations": annotator.annotate(_check_texts(request, "texts"))})
            elif op == "ping":
                _send(protocol, {"id": request_id, "pong": True})
            else:
                raise ValueError(f"unknown op {op!r}; expected score, annotate or ping")
        except Exception as error:  # noqa: BLE001 - one bad request must not end the worker
            traceback.print_exc()
            _send(protocol, {"id": request_id, "error": f"{type(error).__name__}: {error}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
