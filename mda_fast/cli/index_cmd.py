"""`mda index | query`: a per-row gradient index of the heads, then any probe in seconds.

``mda index`` makes one pass over the window (like ``mda score``) and writes ``OUT/index/``: each
row's gradient of every unit's blocks in the EK-FAC eigenbasis, whitened by (Λ + damping)^(-1/2)
and compressed to k_out x k_in (``--k``, ``--projection``), resumable and split across ranks under
torchrun. Units default to every head of the factors' layers that the factors hold.

``mda query`` computes the probes' gradients, maps them the same way and scores every indexed row
with one streamed product: ``OUT/scores/`` (the table of ``mda score``; ``mda top`` reads it) and
``OUT/top/`` (top rows and figures). ``--index`` defaults to OUT/index, the factors to those the
index was built with; ``--data``/``--steps`` are optional (checked against the index, and used to
show the top rows' text).
"""

from __future__ import annotations

# Handlers import their stage code inside the function: `mda --help` must not load torch (cli/__init__).
from mda_fast.attribution.index.spec import IndexSpec
from mda_fast.cli import attribution_cmd as run_cmd
from mda_fast.cli import flags


def register(subparsers) -> None:
    p = subparsers.add_parser("index", help="index every row's head gradients once (resumable)", description=__doc__,
                              formatter_class=flags.FMT)
    run_cmd._common(p, stages=("run",))
    p.add_argument("--factors", default=None, metavar="DIR", help="factor directory (default OUT/factors)")
    flags.settings(p, IndexSpec, dest="index")        # --k, --projection, --seed, --dtype
    p.set_defaults(func=cmd_index)
    p = subparsers.add_parser("query", help="score probes against an index (seconds)", description=__doc__,
                              formatter_class=flags.FMT)
    run_cmd._common(p, stages=("score", "run"))
    p.add_argument("--index", default=None, metavar="DIR", help="index directory (default OUT/index)")
    p.add_argument("--factors", default=None, metavar="DIR", help="factor directory (default: the index's)")
    flags.top_k(p)
    p.set_defaults(func=cmd_query)


def _spec(args):
    return IndexSpec(**flags.given_settings(args, "index"))


def cmd_index(args) -> int:
    spec = _spec(args)
    with run_cmd._session(args) as (_, p):
        p.index(spec, factors=args.factors)
    return 0


def cmd_query(args) -> int:
    run_cmd._start()
    cfg = run_cmd._config(args)
    with run_cmd._claimed(cfg):
        window = run_cmd._window(cfg) if cfg.data.get("source") else None
        model, tok = run_cmd._model(cfg)
        p = run_cmd._pipeline(cfg, model, tok, window)
        p.query(args.index, args.factors, cfg.top_k)
    run_cmd._print_top(p.reports)
    return 0
