"""`mda fit | score | top | run`: EK-FAC on head subspaces, scoring a training window, top rows.

Every command reads an optional YAML config (see mda_fast.config) and flags that override it;
``--set key=value`` overrides anything (``--set settings.fit_fraction=0.2``). Outputs go under
``--out``: ``factors/`` (fit), ``scores/`` (score, resumable), ``top/`` (top), ``heads/`` (run); one
command writes into ``--out`` at a time. ``run`` reuses factors and scores only when they were
computed from the same model weights, window, units, probes and settings (content, not paths).
Under ``torchrun`` fit and score split the rows across ranks (NCCL on GPUs, gloo on CPUs).
"""

from __future__ import annotations

# Handlers import their stage code inside the function: `mda --help` must not load torch (cli/__init__).
import argparse
import contextlib
import os

from mda_fast.attribution.run.settings import Settings
from mda_fast.cli import flags


def _common(p: argparse.ArgumentParser, data: bool = True, model: bool = True, stages=("fit", "score", "run")) -> None:
    p.add_argument("--config", "-c", default=None, metavar="YAML", help="run config file (mda_fast/config.py)")
    flags.out(p, help="output directory of the run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (YAML value)")
    if model:
        flags.model(p)
        flags.revision(p)
        p.add_argument("--device", default=None, help="torch device (default cpu; cuda:LOCAL_RANK under torchrun)")
        flags.units(p)
        flags.probes(p)
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        # every Settings field of these stages, from its one declaration (device and progress above)
        flags.settings(p, Settings, stages, skip=("device", "progress"))
    if data:
        flags.data(p)
        flags.steps(p)
        flags.rows_per_step(p)


def register(subparsers) -> None:
    fmt = flags.FMT
    p = subparsers.add_parser("fit", help="fit EK-FAC on the units' head subspaces", description=__doc__, formatter_class=fmt)
    _common(p, stages=("fit", "run"))
    p.set_defaults(func=cmd_fit)
    p = subparsers.add_parser("score", help="score every row of the window (resumable)", description=__doc__, formatter_class=fmt)
    _common(p, stages=("score", "run"))
    p.add_argument("--factors", default=None, metavar="DIR", help="factor directory (default OUT/factors)")
    p.add_argument("--part", default=None, metavar="I/N|sub",
                   help="score only part I of N of the window (0-based; a job-array task), into OUT/parts/I-of-N/; "
                        "'sub': --data/--steps hold a sub-window of the factors' window (verified by content), into "
                        "OUT/parts/rows-FIRST-LAST/; `mda merge` joins the parts")
    p.add_argument("--other-window", action="store_true",
                   help="score this window with factors fitted on another one (recorded in the manifest)")
    p.set_defaults(func=cmd_score)
    p = subparsers.add_parser("merge", help="merge the parts of `mda score --part I/N` into OUT/scores/",
                              description=__doc__, formatter_class=fmt)
    flags.out(p, required=True, help="the run directory the parts were scored into")
    p.add_argument("--parts", nargs="+", default=None, metavar="DIR", help="part directories (default OUT/parts/*)")
    p.add_argument("--replace", action="store_true", help="replace scores of another run in OUT/scores/")
    p.set_defaults(func=cmd_merge)
    p = subparsers.add_parser("top", help="top rows, histogram and cumulative-influence curve", description=__doc__, formatter_class=fmt)
    _common(p, model=False)
    flags.top_k(p)
    p.add_argument("--column", default=None, help="score column (unit/probe); default: every column")
    flags.model(p, help="checkpoint, for its tokenizer (decoding)")
    flags.revision(p)
    p.set_defaults(func=cmd_top)
    p = subparsers.add_parser("run", help="heads -> fit -> score -> top in one go", description=__doc__, formatter_class=fmt)
    _common(p)
    flags.top_k(p)
    p.add_argument("--segments", type=int, default=1, metavar="S",
                   help="trajectory-aware MDA: cut --steps into S segments ending at saved checkpoints of the "
                        "--model run directory; each segment's rows scored at its own end checkpoint "
                        "(attribution.trajectory)")
    p.add_argument("--propagation", choices=("independent", "source"), default="independent",
                   help="with --segments: 'independent' (each segment's own probe gradient and EK-FAC inverse) "
                        "or 'source' (the window end's probe gradient carried back through later segments, "
                        "SOURCE's (1 - exp(-eta K H)) / (K H) per segment; attribution.unrolled)")
    p.add_argument("--step-size", type=float, default=None, metavar="ETA",
                   help="with --propagation source: the effective step size eta of every segment (default: the "
                        "learning rate over the median Adam denominator, read from each segment's checkpoint)")
    p.set_defaults(func=cmd_run)


# ---- shared --------------------------------------------------------------------------------------
def _config(args):
    from mda_fast.config import RunConfig

    base = {"out": args.out, "model": getattr(args, "model", None), "revision": getattr(args, "revision", None),
            "device": getattr(args, "device", None), "data.source": getattr(args, "data", None),
            "data.steps": getattr(args, "steps", None), "data.rows_per_step": getattr(args, "rows_per_step", None),
            "probes": getattr(args, "probes", None), "top_k": getattr(args, "top_k", None),
            **{f"settings.{k}": v for k, v in flags.given_settings(args).items()}}
    units = getattr(args, "units", None)
    base["units"] = (units[0] if units == ["auto"] else units) if units else None
    if getattr(args, "no_progress", False):
        base["settings.progress"] = False
    cfg = RunConfig.load(args.config, args.set, base)
    cfg.require("out")
    return cfg


def _device(cfg) -> str:
    from mda_fast.attribution.run import dist

    if dist.active() and str(cfg.device).startswith("cuda") and ":" not in str(cfg.device):
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return cfg.device


def _window(cfg):
    from mda_fast.data import open_source, select_steps

    cfg.require("data.source")
    src = open_source(cfg.data["source"], **(cfg.data.get("options") or {}))
    if cfg.data.get("steps"):
        a, b = cfg.data["steps"]
        src = select_steps(src, a, b, cfg.data["rows_per_step"])
    return src


def _model(cfg):
    from mda_fast.models import load_model

    cfg.require("model")
    return load_model(cfg.model, cfg.revision, device=_device(cfg))


def _say(*a) -> None:
    from mda_fast.attribution.run import dist

    if dist.rank() == 0:
        print(*a, flush=True)


def _pipeline(cfg, model, tokenizer, window):
    from mda_fast.attribution.pipeline import Pipeline

    return Pipeline(model, window, cfg.out, cfg.probes, units=cfg.units, tokenizer=tokenizer, settings=cfg.settings,
                    heads=cfg.heads, model_name=str(cfg.model), revision=cfg.revision, log=_say)


def _print_top(reports) -> None:
    from mda_fast.attribution import format_report

    for r in reports:
        print(format_report(r))
        print(f"figures: {r['histogram']}, {r['cumulative']}")


def _start():
    from mda_fast.attribution.run import dist

    dist.init_from_env()


def _claimed(cfg, directory: str | None = None):
    """--out's writer lock (or ``directory``'s: a part job's) for the whole command (rank 0;
    ``mda_fast.lock``): another writer or a location that cannot be written is refused before
    anything is loaded."""
    from mda_fast.attribution.run import dist
    from mda_fast.lock import claim

    return claim(directory or cfg.out) if dist.rank() == 0 else contextlib.nullcontext()


@contextlib.contextmanager
def _session(args, part: str | None = None):
    """(config, Pipeline) of a fit / score / run command, --out (a part job: only its part
    directory) claimed for the whole block; the data is opened before the model is loaded (its
    errors come first and cheap)."""
    from mda_fast.attribution.store.parts import part_dir

    _start()
    cfg = _config(args)
    window = _window(cfg) if part is not None else None   # a part's directory is named by its rows
    with _claimed(cfg, None if part is None else part_dir(cfg.out, part, window)):
        window = window if window is not None else _window(cfg)
        model, tok = _model(cfg)
        yield cfg, _pipeline(cfg, model, tok, window)


def cmd_fit(args) -> int:
    with _session(args) as (_, p):
        p.fit()
    return 0


def cmd_score(args) -> int:
    with _session(args, part=args.part) as (_, p):
        p.score(factors=args.factors or p.path("factors"), part=args.part, other_window=args.other_window)
    return 0


def cmd_merge(args) -> int:
    from mda_fast.attribution.pipeline import Pipeline

    p = Pipeline(None, None, args.out, probes=[], log=_say)
    p.merge(args.parts, replace=args.replace)
    return 0


def cmd_top(args) -> int:
    cfg = _config(args)
    with _claimed(cfg):
        src = _window(cfg) if cfg.data.get("source") else None
        tok = _tokenizer(cfg.model, cfg.revision) if cfg.model else None
        _print_top(_pipeline(cfg, None, tok, src).top(cfg.top_k, args.column))
    return 0


def _tokenizer(model: str, revision: str | None):
    """The checkpoint's tokenizer for decoding (no weights loaded); None when it has none."""
    try:
        from transformers import AutoTokenizer

        from mda_fast.models import resolve_checkpoint

        target, rev, _ = resolve_checkpoint(model, revision)
        return AutoTokenizer.from_pretrained(target, revision=rev)
    except Exception:  # no tokenizer files: rows are shown as bytes / token ids
        return None


def cmd_run(args) -> int:
    if args.segments > 1 or args.propagation != "independent":
        return _run_segments(args)
    with _session(args) as (cfg, p):
        _say(f"window: {len(p.window)} rows of {p.window.seq_len} tokens from {cfg.data['source']}")
        p.run(cfg.top_k)
    _print_top(p.reports)
    return 0


def _run_segments(args) -> int:
    """`mda run --segments S`: a TrajectoryRun over the window's steps, --model a run directory."""
    from mda_fast.attribution.trajectory import TrajectoryRun
    from mda_fast.data import open_source
    from mda_fast.models import load_model
    from mda_fast.training import list_checkpoints

    _start()
    cfg = _config(args)
    cfg.require("model")
    cfg.require("data.steps")
    ckpts = list_checkpoints(cfg.model)
    saved = list(ckpts)
    with _claimed(cfg):
        src = open_source(cfg.data["source"], **(cfg.data.get("options") or {}))
        run = TrajectoryRun(lambda step: load_model(cfg.model, f"step{step}", device=_device(cfg)), src,
                            cfg.data["steps"], cfg.data["rows_per_step"], cfg.out, cfg.probes, cfg.units,
                            args.segments, saved, cfg.settings, log=_say, propagation=args.propagation,
                            checkpoints=ckpts, step_size=args.step_size)
        table = run.run()
    _say(f"{len(run.spans)} segments {run.spans}: {len(table.row_ids)} rows -> {cfg.out}/scores/scores.npz")
    return 0
