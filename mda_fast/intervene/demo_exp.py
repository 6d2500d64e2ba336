"""The demo's causal-validation experiment in one call (issue 5, "the experiment to reproduce").

    from mda_fast.intervene.demo_exp import run_demo_experiment
    run_demo_experiment("runs/demo-intervene")          # trains the demo first if needed (into ./demo)
    run_demo_experiment("demo_out/experiment", demo_dir="demo_out")   # what `mda demo --experiment` runs

``out`` is the experiment directory itself (the layout of ``experiment.py``, plus the synthetic
rows ``synthetic.bin/.idx`` and, for a window other than the demo's, its ``scores/``).

Steps: (1) the embedded demo run (``mda_fast.demo.train_demo``) gives checkpoints and the best
last-layer induction head with its formation window [a, b) (checkpoint steps where the score goes
from < 0.1 to > 0.5); (2) MDA scores every row of that window for the head's QK subspace with the
copy-target probe, on the checkpoint at b; (3) synthetic rows (as many as the top-k) are written;
(4) ``run_experiment`` retrains from step a to b + ``margin`` x (b - a) under baseline, delete,
random-delete, duplicate, random-duplicate and insert-synthetic, over ``seeds``.
"""

from __future__ import annotations

import json
from pathlib import Path

from mda_fast.demo.pipeline import score_window
from mda_fast.errors import ConfigError

TRACK_METRIC = {"induction": "induction", "previous_token": "prev_token"}  # demo name -> track name
PLANS = ("baseline", "delete", "random-delete", "duplicate", "random-duplicate")


def run_demo_experiment(out, demo_dir=None, seeds=(0, 1, 2), top: str = "10%", margin: float = 1.0,
                        cadence: int | None = None, window=None, unit=None, synthetic: bool = True,
                        threshold=None, log=print) -> dict:
    """Train (or reuse) the demo, score its formation window, run the interventions; returns the summary."""
    from mda_fast.data import MMIdxSource
    from mda_fast.demo.config import DemoConfig
    from mda_fast.demo.train_demo import corpus_prefix, run_demo_training
    from mda_fast.intervene.augment import write_synthetic
    from mda_fast.intervene.experiment import run_experiment

    out = Path(out)
    _adopt_nested_run(out)
    demo_dir = Path(demo_dir) if demo_dir else out / "demo"
    info_path = demo_dir / "induction.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else run_demo_training(demo_dir)
    cfg = DemoConfig(**{k: v for k, v in info["config"].items() if k in DemoConfig.__dataclass_fields__})
    unit = tuple(unit) if unit else (int(info["layer"]), int(info["head"]))
    window = tuple(window) if window else (tuple(info["window"]) if info.get("window") else None)
    if window is None:
        raise ConfigError(f"the demo run in {demo_dir} formed no head (no formation window); "
                          "pass window=(a, b)")
    a, b = int(window[0]), int(window[1])
    if threshold is None:  # emergence = crossing the score the demo itself calls "formed"
        threshold = cfg.formation_high if info.get("metric", "induction") == "induction" else cfg.prev_high
    end = min(cfg.steps, b + int(round(margin * (b - a))))
    source = MMIdxSource(corpus_prefix(demo_dir), seq_len=cfg.seq_len, vocab_size=cfg.vocab_size)
    ck = demo_dir / "checkpoints"
    if log:
        log(f"[demo-intervene] unit L{unit[0]}.H{unit[1]}, window {a}-{b}, retrain to {end}")
    scores_dir = demo_dir / "mda" / "scores"  # the demo's own scores when it scored this window already
    if window != tuple(info["window"] or ()) or unit != (int(info["layer"]), int(info["head"])):
        scores_dir = out / "scores"
    table = score_window(ck / f"step{b}", source, (a, b), cfg.rows_per_step, unit, scores_dir,
                         cfg.probe_low, cfg.probe_high, probe=info.get("probe", "copy_target"))
    plans = list(PLANS)
    plans = [p if p == "baseline" else f"{p}:top={top}" for p in plans]
    if synthetic:
        from mda_fast.intervene.plans import resolve_count

        n = resolve_count(top, (b - a) * cfg.rows_per_step)
        write_synthetic(out / "synthetic", n, cfg.seq_len, seed=0)
        plans.append(f"insert-synthetic:path={out / 'synthetic'}")
    del table                                   # scored (or reused) on disk; run_experiment reloads it
    return run_experiment(out, ck, source, scores_dir, (a, b), plans=plans, seeds=seeds,
                          cadence=cadence or max(1, (end - a) // 40), end_step=end, unit=unit,
                          metric=TRACK_METRIC[info.get("metric", "induction")],
                          threshold=threshold, log=log)


def _adopt_nested_run(out: Path) -> None:
    """Move a run made when the experiment went to ``out/experiment/`` (a path joined twice) up
    into ``out``, so re-running resumes it instead of retraining every condition."""
    nested = out / "experiment"
    if not (nested / "config.json").is_file() or (out / "config.json").is_file():
        return
    for p in nested.iterdir():
        if not (out / p.name).exists():
            p.rename(out / p.name)
    if not any(nested.iterdir()):
        nested.rmdir()
