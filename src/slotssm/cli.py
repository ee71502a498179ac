"""`slotssm` command line: data | train | eval | viz | bench | demo | reproduce.

Each command group lives next to the code it drives and exposes `add_parser(subparsers)`, which registers its
sub-commands and sets `func(args) -> int` on the parsed namespace. This file only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Modules that contribute commands, imported when the CLI starts.
COMMAND_MODULES = (
    "slotssm.data.cli",
    "slotssm.train.cli",
    "slotssm.demo",
    "slotssm.reproduce",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slotssm", description="Slot State Space Models: data, training, evaluation.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None and os.environ.get("SLOTSSM_MALLOC", "tuned") != "default":
        # A process started by the `slotssm` command keeps freed heap memory for reuse (see slotssm.malloc);
        # SLOTSSM_MALLOC=default keeps glibc's settings. Library calls of main() from Python change nothing.
        from slotssm.malloc import tune_malloc

        tune_malloc()
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as err:
        # User errors get one clear line, not a traceback.
        print(f"slotssm {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
