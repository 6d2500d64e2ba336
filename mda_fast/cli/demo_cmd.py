"""`mda demo`: the embedded default run, nothing downloaded (see mda_fast.demo.pipeline)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="train a small model until an induction head forms, then attribute it (no downloads)",
        description="Build the embedded corpus, train a small GPT-NeoX with Pythia-style checkpoints until its "
                    "induction head forms, localize its heads, fit EK-FAC on every head's QK subspace and score "
                    "the induction head's formation window (copy-target probe; its previous-token head with its "
                    "own probe in the same pass). With --experiment, also retrain with the top rows removed or "
                    "duplicated against random controls over several seeds, and check how well the scores "
                    "predict retraining (LDS). Re-running reuses every completed stage.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="demo_out", metavar="DIR", help="output directory")
    p.add_argument("--config", default=None, metavar="YAML", help="override mda_fast/demo/demo.yaml")
    p.add_argument("--max-steps", type=int, default=None,
                   help="at most this many training steps (default from the config)")
    p.add_argument("-k", "--top-k", type=int, default=8, help="top rows to print per side")
    p.add_argument("--experiment", action="store_true",
                   help="also run the causal retraining experiment and the LDS check (about 25 minutes on 2 cores)")
    p.add_argument("--seeds", type=int, default=8, help="seeds of the experiment")
    p.add_argument("--jobs", type=int, default=2, help="retraining worker processes (one core each)")
    p.add_argument("--lds-subsets", type=int, default=24, help="random subsets of the LDS check (0: skip it)")
    p.add_argument("--lds-fraction", type=float, default=0.5, help="share of the window's rows each LDS subset keeps")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    import torch

    from mda_fast.demo.config import load_demo_config
    from mda_fast.demo.pipeline import run_demo
    from mda_fast.errors import ConfigError

    if not 0.0 < args.lds_fraction < 1.0:  # checked before hours of training, not after
        raise ConfigError(f"--lds-fraction must be in (0, 1), got {args.lds_fraction}")
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    over = {"steps": args.max_steps} if args.max_steps else {}
    cfg = load_demo_config(args.config, **over)
    summary = run_demo(args.out, cfg, top_k=args.top_k, progress=not args.no_progress)
    print(f"summary: {args.out}/demo.json; heads heat-map {summary['outputs']['heads']}/heads.png; "
          f"figures in {summary['outputs']['top']}")
    if args.experiment:
        from mda_fast.demo.experiment import run_demo_experiment

        run_demo_experiment(args.out, seeds=args.seeds, jobs=args.jobs, lds_subsets=args.lds_subsets,
                            lds_fraction=args.lds_fraction)
        print(f"experiment: {args.out}/experiment/summary.json, curves.png, dose.png, report.html, lds/lds.json")
    return 0
