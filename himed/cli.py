"""The ``himed`` command.

Each area of the package that has commands exposes ``add_commands(subparsers)`` in its ``commands`` module; the
command modules import nothing heavy at module level, so ``himed --help`` stays fast. Handlers are set with
``parser.set_defaults(handler=fn)`` and receive the parsed arguments; they return an exit code (or None for 0).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Packages whose ``commands`` module contributes sub-commands, in the order they are listed by --help.
COMMAND_PACKAGES = ("data", "models", "rewards", "clinical", "metrics", "trainers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="himed", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING, ...)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for package in COMMAND_PACKAGES:
        module_name = f"himed.{package}.commands"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        module.add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        # Bad input: a clear one-line message naming the file, line or field, not a traceback.
        print(f"himed {args.command}: error: {error}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
