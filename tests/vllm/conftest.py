"""Fixtures for the vLLM tests (marker ``vllm``; they run in .venv-vllm, README "vLLM on CPU").

Every test module here sets ``pytestmark = pytest.mark.vllm`` so the default suite (which has no vLLM) skips it. Data: the demo
generator with one image per study, two (``lateral_rate=1``), or one image plus indication and prior-report text.
"""

import json
import os
from pathlib import Path

import pytest

# Keep vLLM's CPU KV cache small: the machine is shared (.pth default is 1 GiB too; this makes the tests explicit).
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

PRIOR_RATE = 0.5


def add_indication(out: Path) -> None:
    """Give every study an indication (the demo generator writes none), of two lengths so batches mix lengths."""
    annotation_path = out / "annotation.json"
    annotation = json.loads(annotation_path.read_text())
    for split_rows in annotation.values():
        for index, row in enumerate(split_rows):
            row["indication"] = ["Shortness of breath.", "Cough and fever for three days, evaluate for pneumonia."][
                index % 2
            ]
    annotation_path.write_text(json.dumps(annotation))


def make_demo(out: Path, lateral_rate: float, with_text: bool) -> Path:
    """``himed data demo``'s generator; with text: prior reports for a fraction of studies (``prior_rate``) and an
    indication for every study."""
    from himed.data.demo import generate_demo

    generate_demo(out, n=20, seed=0, lateral_rate=lateral_rate, prior_rate=PRIOR_RATE if with_text else 0.0)
    if with_text:
        add_indication(out)
        annotation = json.loads((out / "annotation.json").read_text())
        # The GRPO tests train on the first 4 studies: some of them carry a prior report, some do not.
        assert len({bool(row.get("prior_report")) for row in annotation["train"][:4]}) == 2
    return out


@pytest.fixture(scope="session")
def demo_variants(tmp_path_factory) -> dict[str, Path]:
    """Three small demo sets: one image per study, two per study, one image with indication + prior report."""
    return {
        "one_image": make_demo(tmp_path_factory.mktemp("demo_one"), lateral_rate=0.0, with_text=False),
        "two_images": make_demo(tmp_path_factory.mktemp("demo_two"), lateral_rate=1.0, with_text=False),
        "with_text": make_demo(tmp_path_factory.mktemp("demo_text"), lateral_rate=0.0, with_text=True),
    }


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VLLMServer:
    """``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1 (``vllm serve`` needs the ``vllm`` distribution
    name, which the CPU build lacks: docs/vllm.md), stopped by ``stop()``; its log is kept for the assertions."""

    MAX_MODEL_LEN = 4096  # the judge prompt alone is ~1,100 tokens with the tiny model's small BPE vocabulary

    def __init__(self, model_dir: Path, log_path: Path, *extra: str):
        import subprocess
        import sys

        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.model = "tiny"
        self.log_path = log_path
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
        command += ["--served-model-name", self.model, "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--dtype", "float32", "--max-model-len", str(self.MAX_MODEL_LEN)]
        command += ["--limit-mm-per-prompt", '{"image": 2}']
        command += ["--logprobs-mode", "processed_logprobs", "--enable-scale-out", *extra]
        # VLLM_SERVER_DEV_MODE: the /server_info and weight endpoints TRL's client uses (launch/serve_rollout.sh).
        env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
        self.log = open(log_path, "w")  # noqa: SIM115 (closed in stop)
        # Its own session: kill() and stop() reach the engine-core child process too.
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def wait(self, timeout: float = 420.0) -> "VLLMServer":
        import time
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM server exited {self.process.returncode}: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(1.0)
        self.stop()
        raise TimeoutError(f"vLLM server not up after {timeout:.0f} s: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the server and its children (a crash, not a shutdown)."""
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        import signal
        import subprocess

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


@pytest.fixture(scope="module")
def vllm_server(tiny_model_dir, tmp_path_factory):
    """One server per test module that needs it (start-up is most of the cost; never two at once).

    Structured outputs through xgrammar with free whitespace forbidden: under json_schema a random-weight model can
    then only emit the object itself (with free whitespace allowed it emits whitespace until max_tokens).
    """
    server = VLLMServer(
        tiny_model_dir,
        tmp_path_factory.mktemp("vllm_server") / "server.log",
        "--structured-outputs-config",
        '{"backend": "xgrammar", "disable_any_whitespace": true}',
    ).wait()
    yield server
    server.stop()
