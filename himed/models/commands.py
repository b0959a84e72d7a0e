"""``himed model ...`` commands: ``himed model tiny`` builds a tiny offline model (see himed.models.tiny).

Nothing heavy is imported at module level, so ``himed --help`` stays fast.
"""

from __future__ import annotations

import argparse

ARCH_CHOICES = ("qwen2_5_vl", "qwen3_vl")  # kept equal to himed.models.tiny.ARCHS by a test


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser("model", help="build and inspect policy models")
    model_commands = model.add_subparsers(dest="model_command", metavar="MODEL_COMMAND", required=True)

    tiny = model_commands.add_parser(
        "tiny",
        help="build a tiny random-weight vision-language model and processor offline",
        description="Build a tiny random-weight Qwen-VL model whose tokenizer is trained on a report corpus.",
    )
    tiny.add_argument("--arch", choices=ARCH_CHOICES, default="qwen2_5_vl", help="architecture (default qwen2_5_vl)")
    tiny.add_argument("--out-dir", required=True, help="directory to write the model and processor to")
    tiny.add_argument(
        "--corpus",
        default=None,
        help="tokenizer corpus, one report per line (default: the demo report corpus for --seed)",
    )
    tiny.add_argument("--seed", type=int, default=0, help="seed for the weights and the default corpus (default 0)")
    tiny.set_defaults(handler=_tiny)


def _tiny(args: argparse.Namespace) -> int:
    from himed.models.tiny import build_tiny_model, read_corpus

    corpus = read_corpus(args.corpus) if args.corpus is not None else None
    out_dir = build_tiny_model(args.out_dir, arch=args.arch, corpus=corpus, seed=args.seed)
    print(out_dir)
    return 0
