"""``mda env``: which backends can run here, and why not."""

from __future__ import annotations

# Handlers import their stage code inside the function: `mda --help` must not load torch (cli/__init__).
import json


def register(subparsers) -> None:
    p = subparsers.add_parser("env", help="show available backends (C++, CUDA, Triton), versions, threads")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_env)


def cmd_env(args) -> int:
    from mda_fast.env import env_report, format_report

    rep = env_report()
    print(json.dumps(rep, indent=2) if args.json else format_report(rep))
    return 0
