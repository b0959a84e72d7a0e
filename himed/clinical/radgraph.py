"""RadGraph F1 through a bridge to the user's separate RadGraph environment (docs/rewards.md).

The published ``radgraph`` package (0.1.18, checkpoint ``radgraph-xl`` by default) needs transformers < 5, which
cannot live in himed's environment. ``RadGraphBridge`` starts the user's other Python (``radgraph_python``) running
``radgraph_worker.py`` - a long-lived process that loads the model once and answers JSON-line requests - and returns,
for each (hypothesis, reference) pair, the three values of ``radgraph.F1RadGraph(reward_level="all")``:

- ``simple``   (RG_E): F1 over (entity tokens, label);
- ``partial``  (RG_ER): F1 over (entity tokens, label, has-a-relation);
- ``complete`` (RG_ER-bar): F1 over entities without relations plus (tokens, label, relation, object tokens).

A pair with an empty hypothesis or reference scores (0, 0, 0), as in F1RadGraph. Values are computed by the
package's own ``compute_reward`` inside the worker; the only departure is an annotation cache keyed by text there.

Set-up, once::

    python3 -m venv ~/.radgraph && ~/.radgraph/bin/pip install "radgraph==0.1.18" "transformers<5" torch

then ``radgraph_python: ~/.radgraph/bin/python``. The package downloads its checkpoint from the Hugging Face hub
(StanfordAIMI/RRG_scorers) into ``model_cache_dir`` on first use; offline, place the extracted model folder at
``<model_cache_dir>/<model_type>/`` (``config.json``, ``vocabulary/``, ``weights.th``).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("radgraph_worker.py")
SETUP_COMMAND = 'python3 -m venv ~/.radgraph && ~/.radgraph/bin/pip install "radgraph==0.1.18" "transformers<5" torch'
MODEL_TYPES = ("radgraph", "radgraph-xl", "modern-radgraph-xl", "echograph")


class RadGraphScore(NamedTuple):
    """RadGraph F1 of one pair at the three reward levels of ``F1RadGraph(reward_level="all")``."""

    simple: float
    partial: float
    complete: float


class RadGraphSetupError(ValueError):
    """The RadGraph environment or model is missing or broken; the message says how to fix it."""


class RadGraphError(RuntimeError):
    """The worker failed, died or timed out while answering a request."""


class RadGraphBridge:
    """A long-lived RadGraph worker in another Python; thread-safe; restarts a dead worker on the next call."""

    def __init__(
        self,
        python: str | os.PathLike | None,
        model_type: str = "radgraph-xl",
        model_cache_dir: str | os.PathLike | None = None,
        timeout: float = 300.0,
        startup_timeout: float = 900.0,
        cuda: int = -1,
        cache_size: int = 4096,
        env: dict[str, str] | None = None,
        chunk_size: int = 64,
    ) -> None:
        if not python:
            raise RadGraphSetupError(
                f"RadGraph needs radgraph_python: the Python of a separate environment with radgraph installed. "
                f"Set it up with: {SETUP_COMMAND} and pass radgraph_python: ~/.radgraph/bin/python"
            )
        self.python = str(Path(python).expanduser())
        if not (os.path.isfile(self.python) and os.access(self.python, os.X_OK)):
            raise RadGraphSetupError(
                f"radgraph_python {self.python} is not an executable file. Set up the environment with: {SETUP_COMMAND}"
            )
        if model_type not in MODEL_TYPES:
            raise ValueError(f"unknown RadGraph model_type {model_type!r}; one of {', '.join(MODEL_TYPES)}")
        self.model_type = model_type
        self.model_cache_dir = None if model_cache_dir is None else str(Path(model_cache_dir).expanduser())
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self.cuda = cuda
        self.cache_size = cache_size
        self.env = env
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        # Requests carry at most this many pairs (texts), so ``timeout`` bounds one chunk, not a whole evaluation
        # set: RadGraph-XL on CPU takes a large fraction of a second per report.
        self.chunk_size = chunk_size
        self.info: dict[str, Any] = {}
        self._process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._lock = threading.Lock()
        self._next_id = 0

    # -- process management ---------------------------------------------------------------------------------------

    def _command(self) -> list[str]:
        command = [self.python, "-u", str(WORKER_SCRIPT), "--model-type", self.model_type]
        command += ["--cuda", str(self.cuda), "--cache-size", str(self.cache_size)]
        if self.model_cache_dir is not None:
            command += ["--model-cache-dir", self.model_cache_dir]
        return command

    def _start(self) -> None:
        self._lines = queue.Queue()
        self._stderr_tail.clear()
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            process = subprocess.Popen(
                self._command(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                bufsize=1,
                env=env,
            )
        except OSError as error:
            raise RadGraphSetupError(f"cannot start {self.python}: {error}. Set up with: {SETUP_COMMAND}") from None
        self._process = process
        # Reader threads: stdout lines go to a queue (read with a timeout); stderr is drained so the worker never
        # blocks on a full pipe, and its tail explains failures.
        threading.Thread(target=self._read_stdout, args=(process, self._lines), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(process,), daemon=True).start()
        hello = self._receive(self.startup_timeout, "starting")
        if hello.get("ready") is True:
            self.info = hello
            logger.info("RadGraph worker ready: radgraph %s, %s", hello.get("radgraph_version"), self.model_type)
            return
        self.close()
        kind, error = hello.get("kind"), hello.get("error", "unknown error")
        if kind == "import":
            raise RadGraphSetupError(
                f"radgraph is not importable in {self.python} ({error}). Set up the environment with: {SETUP_COMMAND}"
            )
        where = self.model_cache_dir or "radgraph's default cache"
        raise RadGraphSetupError(
            f"RadGraph could not load model {self.model_type!r} ({error}). Online, it downloads on first use; "
            f"offline, put the extracted model (config.json, vocabulary/, weights.th) in "
            f"{where}/{self.model_type}/.{self._stderr_hint()}"
        )

    @staticmethod
    def _read_stdout(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)  # end of stream: the worker exited

    def _read_stderr(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self._stderr_tail.append(line.rstrip())
            logger.debug("radgraph worker: %s", line.rstrip())

    def _stderr_hint(self) -> str:
        tail = [line for line in self._stderr_tail if line.strip()][-8:]
        return ("\nworker stderr (last lines):\n  " + "\n  ".join(tail)) if tail else ""

    def _receive(self, timeout: float, doing: str) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            # A worker stuck on a request cannot be trusted with the next one.
            self.close(kill=True)
            raise RadGraphError(f"RadGraph worker timed out after {timeout:.0f} s while {doing}") from None
        if line is None:
            code = self._process.wait(timeout=10) if self._process is not None else None
            self._process = None
            raise RadGraphError(f"RadGraph worker exited (code {code}) while {doing}.{self._stderr_hint()}")
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            self.close(kill=True)
            raise RadGraphError(f"RadGraph worker wrote a line that is not JSON: {line[:200]!r}") from None
        if not isinstance(message, dict):
            self.close(kill=True)
            raise RadGraphError(f"RadGraph worker wrote a non-object line: {line[:200]!r}")
        return message

    def _request(self, payload: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._start()
            assert self._process is not None and self._process.stdin is not None
            self._next_id += 1
            request_id = self._next_id
            try:
                self._process.stdin.write(json.dumps({"id": request_id, **payload}) + "\n")
                self._process.stdin.flush()
            except (BrokenPipeError, OSError) as error:
                self.close()
                raise RadGraphError(f"RadGraph worker is gone ({error}).{self._stderr_hint()}") from None
            answer = self._receive(self.timeout, f"answering {payload.get('op')}")
            if answer.get("id") != request_id:
                self.close(kill=True)
                raise RadGraphError(f"RadGraph worker answered request {answer.get('id')} instead of {request_id}")
            if "error" in answer:
                raise RadGraphError(f"RadGraph worker failed: {answer['error']}")
            return answer

    def start(self) -> dict[str, Any]:
        """Start the worker now (it starts on first use otherwise); returns its hello (radgraph version, model)."""
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._start()
        return self.info

    def close(self, kill: bool = False) -> None:
        """Stop the worker: closing its stdin ends it; killed when ``kill`` or when it does not exit promptly."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.stdin is not None:
                process.stdin.close()
            if kill:
                process.kill()
            process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait(timeout=5)

    def __enter__(self) -> RadGraphBridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -- requests -------------------------------------------------------------------------------------------------

    def score(self, hyps: Sequence[str], refs: Sequence[str]) -> list[RadGraphScore | None]:
        """RadGraph F1 (simple, partial, complete) per pair; None where RadGraph could not annotate a text."""
        hyps, refs = list(hyps), list(refs)
        if len(hyps) != len(refs):
            raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
        for name, texts in (("hyps", hyps), ("refs", refs)):
            for index, text in enumerate(texts):
                if not isinstance(text, str):
                    raise ValueError(f"{name}[{index}] must be a string, got {type(text).__name__}")
        out: list[RadGraphScore | None] = []
        for begin in range(0, len(hyps), self.chunk_size):
            chunk_hyps, chunk_refs = hyps[begin : begin + self.chunk_size], refs[begin : begin + self.chunk_size]
            scores = self._request({"op": "score", "hyps": chunk_hyps, "refs": chunk_refs}).get("scores")
            if not isinstance(scores, list) or len(scores) != len(chunk_hyps):
                raise RadGraphError(f"RadGraph worker returned {scores!r:.200} for {len(chunk_hyps)} pairs")
            out.extend(None if value is None else RadGraphScore(*map(float, value)) for value in scores)
        return out

    def annotate(self, texts: Sequence[str]) -> list[dict[str, Any] | None]:
        """RadGraph's annotation dict per text (entities with tokens, label and relations)."""
        texts = list(texts)
        out: list[dict[str, Any] | None] = []
        for begin in range(0, len(texts), self.chunk_size):
            chunk = texts[begin : begin + self.chunk_size]
            annotations = self._request({"op": "annotate", "texts": chunk}).get("annotations")
            if not isinstance(annotations, list) or len(annotations) != len(chunk):
                raise RadGraphError(f"RadGraph worker returned {annotations!r:.200} for {len(chunk)} texts")
            out.extend(annotations)
        return out

    def f1(self, hyps: Sequence[str], refs: Sequence[str]) -> tuple[RadGraphScore, list[RadGraphScore | None]]:
        """Like ``F1RadGraph(reward_level="all")(hyps=..., refs=...)[:2]``: the mean over scored pairs, and per pair."""
        scores = self.score(hyps, refs)
        scored = [score for score in scores if score is not None]
        if not scored:
            return RadGraphScore(0.0, 0.0, 0.0), scores
        mean = RadGraphScore(*(sum(values) / len(scored) for values in zip(*scored, strict=True)))
        return mean, scores


_BRIDGES: dict[tuple[Any, ...], RadGraphBridge] = {}
_BRIDGES_LOCK = threading.Lock()


def get_radgraph_bridge(
    python: str | os.PathLike | None, model_type: str = "radgraph-xl", model_cache_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> RadGraphBridge:  # fmt: skip
    """One shared bridge per (python, model, cache dir, options) in this process: the model loads once."""
    key = (str(python), model_type, str(model_cache_dir), tuple(sorted(kwargs.items())))
    with _BRIDGES_LOCK:
        bridge = _BRIDGES.get(key)
        if bridge is None:
            bridge = _BRIDGES[key] = RadGraphBridge(python, model_type, model_cache_dir, **kwargs)
    return bridge
