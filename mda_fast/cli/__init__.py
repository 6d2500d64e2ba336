"""The ``mda`` command line.

Each sub-command group lives in its own module exposing ``register(subparsers)``; every
command handler is ``cmd_<command>(args)`` and returns an exit code. :class:`MDAError` becomes one
line on stderr and exit status 2, never a traceback.

Import rule of this package: the parsers import only torch-free modules (flags, settings
declarations), and each handler imports its stage code inside its body, so ``mda --help`` and an
argument error never wait seconds for torch and transformers (``tests/test_cli_settings.py`` checks).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mda_fast.errors import MDAError

# Modules that each add sub-commands; order is the order in ``mda --help``.
COMMAND_MODULES = (
    "mda_fast.cli.env_cmd",
    "mda_fast.cli.data_cmd",
    "mda_fast.cli.heads_cmd",
    "mda_fast.cli.attribution_cmd",
    "mda_fast.cli.index_cmd",
    "mda_fast.cli.exact_cmd",
    "mda_fast.cli.demo_cmd",
    "mda_fast.cli.intervene_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mda", description="Mechanistic Data Attribution, fast.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MDAError as exc:
        print(f"mda: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mda: interrupted; completed parts are kept and the run can be resumed", file=sys.stderr)
        return 130
