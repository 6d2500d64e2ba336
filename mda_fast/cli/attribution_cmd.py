"""`mda fit | score | top | run`: EK-FAC on head subspaces, scoring a training window, top rows.

Every command reads an optional YAML config (see mda_fast.config) and flags that override it;
``--set key=value`` overrides anything (``--set settings.fit_fraction=0.2``). Outputs go under
``--out``: ``factors/`` (fit), ``scores/`` (score, resumable), ``top/`` (top), ``heads/`` (run).
Under ``torchrun`` fit and score split the rows across ranks (NCCL on GPUs, gloo on CPUs).
"""

from __future__ import annotations

import argparse
import json
import os


def _common(p: argparse.ArgumentParser, data: bool = True, model: bool = True) -> None:
    p.add_argument("--config", "-c", default=None, metavar="YAML", help="run config file (mda_fast/config.py)")
    p.add_argument("--out", default=None, metavar="DIR", help="output directory of the run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (YAML value)")
    if model:
        p.add_argument("--model", default=None, help="checkpoint directory or hub id")
        p.add_argument("--revision", default=None, help="hub revision or step sub-directory (step1000)")
        p.add_argument("--device", default=None, help="torch device (default cpu; cuda:LOCAL_RANK under torchrun)")
        p.add_argument("--units", nargs="+", default=None, metavar="UNIT", help="L1.H3.qk ... or 'auto'")
        p.add_argument("--probes", nargs="+", default=None, metavar="PROBE",
                       help="copy_target, copy_target2, prev_attn:L1.H3, module:function")
        p.add_argument("--batch-size", type=int, default=None, help="rows per forward/backward (settings.batch_size)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
    if data:
        p.add_argument("--data", default=None, help="training rows (anything open_source accepts)")
        p.add_argument("--steps", default=None, metavar="START:END", help="window of optimizer steps [START, END)")
        p.add_argument("--rows-per-step", type=int, default=None)


def register(subparsers) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = subparsers.add_parser("fit", help="fit EK-FAC on the units' head subspaces", description=__doc__, formatter_class=fmt)
    _common(p)
    p.add_argument("--fit-fraction", type=float, default=None, help="share of the window to fit on (default 0.1)")
    p.set_defaults(func=cmd_fit)
    p = subparsers.add_parser("score", help="score every row of the window (resumable)", description=__doc__, formatter_class=fmt)
    _common(p)
    p.add_argument("--factors", default=None, metavar="DIR", help="factor directory (default OUT/factors)")
    p.set_defaults(func=cmd_score)
    p = subparsers.add_parser("top", help="top rows, histogram and cumulative-influence curve", description=__doc__, formatter_class=fmt)
    _common(p, model=False)
    p.add_argument("-k", "--top-k", type=int, default=None, help="rows per side")
    p.add_argument("--column", default=None, help="score column (unit/probe); default: every column")
    p.add_argument("--model", default=None, help="checkpoint, for its tokenizer (decoding)")
    p.add_argument("--revision", default=None)
    p.set_defaults(func=cmd_top)
    p = subparsers.add_parser("run", help="heads -> fit -> score -> top in one go", description=__doc__, formatter_class=fmt)
    _common(p)
    p.add_argument("--fit-fraction", type=float, default=None)
    p.add_argument("-k", "--top-k", type=int, default=None)
    p.set_defaults(func=cmd_run)


# ---- shared --------------------------------------------------------------------------------------
def _config(args):
    from mda_fast.config import RunConfig

    base = {"out": args.out, "model": getattr(args, "model", None), "revision": getattr(args, "revision", None),
            "device": getattr(args, "device", None), "data.source": getattr(args, "data", None),
            "data.steps": getattr(args, "steps", None), "data.rows_per_step": getattr(args, "rows_per_step", None),
            "probes": getattr(args, "probes", None), "top_k": getattr(args, "top_k", None),
            "settings.batch_size": getattr(args, "batch_size", None),
            "settings.fit_fraction": getattr(args, "fit_fraction", None)}
    units = getattr(args, "units", None)
    base["units"] = (units[0] if units == ["auto"] else units) if units else None
    if getattr(args, "no_progress", False):
        base["settings.progress"] = False
    cfg = RunConfig.load(args.config, args.set, base)
    cfg.require("out")
    return cfg


def _device(cfg) -> str:
    from mda_fast.attribution import dist

    if dist.active() and str(cfg.device).startswith("cuda") and ":" not in str(cfg.device):
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return cfg.device


def _window(cfg):
    from mda_fast.data import open_source, select_steps

    cfg.require("data.source")
    src = open_source(cfg.data["source"], **(cfg.data.get("options") or {}))
    if cfg.data.get("steps"):
        a, b = cfg.data["steps"]
        src = select_steps(src, a, b, int(cfg.data.get("rows_per_step") or 1024))
    return src


def _model(cfg):
    from mda_fast.models import load_model

    cfg.require("model")
    return load_model(cfg.model, cfg.revision, device=_device(cfg))


def _say(*a) -> None:
    from mda_fast.attribution import dist

    if dist.rank() == 0:
        print(*a, flush=True)


def _units(cfg, model, tokenizer, factors_dir: str | None = None) -> list[str]:
    """Configured units; 'auto' = factors' units when fitted already, else the best heads."""
    if cfg.units != "auto":
        return cfg.units
    if factors_dir and os.path.isfile(os.path.join(factors_dir, "manifest.json")):
        with open(os.path.join(factors_dir, "manifest.json")) as fh:
            return json.load(fh)["units"]
    return _heads_stage(cfg, model, tokenizer)


def _heads_stage(cfg, model, tokenizer) -> list[str]:
    from mda_fast.attribution import dist
    from mda_fast.heads import head_scores

    h = cfg.heads
    res = head_scores(model, n=int(h["n"]), seq_len=int(h["seq_len"]), seed=int(h["seed"]), tokenizer=tokenizer,
                      name=str(cfg.model), revision=cfg.revision)
    if dist.rank() == 0:
        out = os.path.join(cfg.out, "heads")
        os.makedirs(out, exist_ok=True)
        res.to_csv(os.path.join(out, "heads.csv")), res.to_json(os.path.join(out, "heads.json"))
        res.heatmap(os.path.join(out, "heads.png"))
        _say(res.table(sort=h["metric"], k=5))
    best = res.top(h["metric"], int(h["top"]))
    units = [f"L{l}.H{hd}.{h['mode']}" for l, hd, _ in best]
    _say(f"units (best {h['metric']} heads): {', '.join(units)}")
    return units


def _mda(cfg, model, tokenizer, units):
    from mda_fast.attribution import MDA, Settings

    return MDA(model, units, cfg.probes, tokenizer=tokenizer, settings=Settings.from_dict(cfg.settings),
               model_name=str(cfg.model), revision=cfg.revision)


# ---- stages --------------------------------------------------------------------------------------
def _fit(cfg, model, tokenizer, src):
    out = os.path.join(cfg.out, "factors")
    mda = _mda(cfg, model, tokenizer, _units(cfg, model, tokenizer))
    mda.fit(src, out_dir=out)
    fs = mda.factors
    _say(f"fitted EK-FAC on {fs.manifest['rows_used']} of {fs.manifest['window_rows']} rows for "
         f"{', '.join(fs.blocks)} -> {out}")
    return mda


def _score(cfg, model, tokenizer, src, mda=None, factors=None):
    factors = factors or os.path.join(cfg.out, "factors")
    if mda is None:
        mda = _mda(cfg, model, tokenizer, _units(cfg, model, tokenizer, factors)).load_factors(factors)
    out = os.path.join(cfg.out, "scores")
    table = mda.score(src, out)
    _say(f"scored {len(table.row_ids)} rows x {len(table.columns)} columns -> {out}/scores.npz")
    return table


def _top(cfg, table, src, tokenizer, column=None):
    from mda_fast.attribution import dist, format_report, report_top

    if dist.rank() != 0:
        return
    out = os.path.join(cfg.out, "top")
    reports = [report_top(table, int(cfg.top_k), c, src, tokenizer, out) for c in ([column] if column else table.columns)]
    from mda_fast.io import write_json

    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "top.json"), {"reports": reports})
    for r in reports:
        print(format_report(r))
        print(f"figures: {r['histogram']}, {r['cumulative']}")


def _start():
    from mda_fast.attribution import dist

    dist.init_from_env()


def cmd_fit(args) -> int:
    _start()
    cfg = _config(args)
    model, tok = _model(cfg)
    _fit(cfg, model, tok, _window(cfg))
    return 0


def cmd_score(args) -> int:
    _start()
    cfg = _config(args)
    model, tok = _model(cfg)
    _score(cfg, model, tok, _window(cfg), factors=args.factors)
    return 0


def cmd_top(args) -> int:
    from mda_fast.attribution import load_scores

    cfg = _config(args)
    table = load_scores(os.path.join(cfg.out, "scores"))
    src = _window(cfg) if cfg.data.get("source") else None
    tok = _tokenizer(cfg.model, cfg.revision) if cfg.model else None
    _top(cfg, table, src, tok, args.column)
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
    _start()
    cfg = _config(args)
    model, tok = _model(cfg)
    src = _window(cfg)
    _say(f"window: {len(src)} rows of {src.seq_len} tokens from {cfg.data['source']}")
    mda = _fit(cfg, model, tok, src)
    table = _score(cfg, model, tok, src, mda=mda)
    _top(cfg, table, src, tok)
    return 0
