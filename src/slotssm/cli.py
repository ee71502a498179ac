"""`slotssm` command line: data | train | eval | viz | list | demo | reproduce, and `slotssm --version`.

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


def _cmd_list(args) -> int:
    from slotssm.tasks.registry import catalogue

    print(catalogue())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from slotssm import __version__

    parser = argparse.ArgumentParser(prog="slotssm", description="Slot State Space Models: data, training, evaluation.")
    parser.add_argument("--version", action="version", version=f"slotssm {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    p = subparsers.add_parser("list", help="list tasks, models and presets", description="List tasks, models, presets.")
    p.set_defaults(func=_cmd_list)
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
    except (ValueError, TypeError, KeyError, OSError) as err:
        # User errors (bad values, paths that are not directories or not writable) get one clear line, not a
        # traceback; SLOTSSM_TRACEBACK=1 shows it.
        if os.environ.get("SLOTSSM_TRACEBACK"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"slotssm {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
