"""`mda demo`: the embedded default run, nothing downloaded (see mda_fast.demo.pipeline)."""

from __future__ import annotations

# Handlers import their stage code inside the function: `mda --help` must not load torch (cli/__init__).
from mda_fast.cli import flags


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="train a small model until an induction head forms, then attribute it (no downloads)",
        description="Build the embedded corpus, train a small GPT-NeoX with Pythia-style checkpoints until its "
                    "induction head forms, localize its heads, fit EK-FAC on every head's QK subspace and score "
                    "the induction head's formation window (copy-target probe; its previous-token head with its "
                    "own probe in the same pass). With --experiment, also retrain with the top rows removed or "
                    "duplicated against random controls over several seeds, and check how well the scores "
                    "predict retraining (LDS). Re-running reuses every completed stage.",
        formatter_class=flags.FMT)
    p.add_argument("--out", default="demo_out", metavar="DIR", help="output directory")
    p.add_argument("--config", default=None, metavar="YAML", help="override mda_fast/demo/demo.yaml")
    p.add_argument("--max-steps", type=int, default=None,
                   help="at most this many training steps (default from the config)")
    flags.top_k(p, default=8, help="top rows to print per side: a count or a %% of the scored rows")
    p.add_argument("--experiment", action="store_true",
                   help="also run the causal retraining experiment and the LDS check (under 30 minutes on 2 cores)")
    p.add_argument("--long", action="store_true",
                   help="the long experiment: dose response (2.5-20%%) and more conditions")
    p.add_argument("--seeds", type=int, default=6, help="row-order seeds of the experiment")
    p.add_argument("--jobs", type=int, default=2, help="retraining worker processes (one core each)")
    p.add_argument("--lds-subsets", type=int, default=16, help="random subsets of each LDS check (0: skip it)")
    p.add_argument("--lds-fractions", default=None,
                   help="share of the window's rows each LDS subset keeps, one check per value "
                        "(default 0.9; with --long 0.5,0.9,0.98)")
    p.add_argument("--lds-seeds", type=int, default=2, help="row-order seeds each LDS subset is retrained under")
    p.add_argument("--conditions", default=None, metavar="NAMES",
                   help="comma-separated: run only these experiment conditions (the baseline always)")
    p.add_argument("--trajectories", default=None, metavar="SEEDS",
                   help="comma-separated model/corpus seeds: one demo (and experiment) per trajectory in "
                        "OUT/seed<s>, pooled in OUT/trajectories.json")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    import torch

    from mda_fast.demo.config import load_demo_config
    from mda_fast.demo.experiment import LDS_FRACTIONS, LDS_FRACTIONS_LONG
    from mda_fast.demo.pipeline import run_demo
    from mda_fast.errors import ConfigError

    given = args.lds_fractions or ",".join(map(str, LDS_FRACTIONS_LONG if args.long else LDS_FRACTIONS))
    try:                                   # checked before hours of training, not after
        fractions = tuple(float(x) for x in given.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--lds-fractions must be comma-separated numbers, got {given!r}") from None
    if not fractions or not all(0.0 < f < 1.0 for f in fractions):
        raise ConfigError(f"--lds-fractions must be in (0, 1), got {given}")
    if args.lds_seeds < 1:
        raise ConfigError(f"--lds-seeds must be >= 1, got {args.lds_seeds}")
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    over = {"steps": args.max_steps} if args.max_steps else {}
    cfg = load_demo_config(args.config, **over)
    options = dict(seeds=args.seeds, jobs=args.jobs, lds_subsets=args.lds_subsets, lds_fractions=fractions,
                   lds_seeds=args.lds_seeds, long=args.long,
                   conditions=[c.strip() for c in args.conditions.split(",") if c.strip()] if args.conditions else None)
    if args.trajectories:
        from mda_fast.demo.trajectories import run_trajectories

        try:
            seeds = [int(x) for x in args.trajectories.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--trajectories must be comma-separated integers, got {args.trajectories!r}") from None
        run_trajectories(args.out, cfg, seeds, experiment=args.experiment, top_k=args.top_k,
                         progress=not args.no_progress, **options)
        print(f"trajectories: {args.out}/trajectories.json; each in {args.out}/seed<s>/")
        return 0
    summary = run_demo(args.out, cfg, top_k=args.top_k, progress=not args.no_progress)
    print(f"summary: {args.out}/demo.json; heads heat-map {summary['outputs']['heads']}/heads.png; "
          f"figures in {summary['outputs']['top']}")
    if args.experiment:
        from mda_fast.demo.experiment import run_demo_experiment

        run_demo_experiment(args.out, **options)
        print(f"experiment: {args.out}/experiment/summary.json, curves.png, effects.png, report.html, lds*/lds.json")
    return 0
