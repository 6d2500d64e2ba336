"""`mda exact`: the exact metagradient of a target (a head's induction score or a probe at the
window's end) w.r.t. every window row's loss weight, through the run's real training updates
(``mda_fast.oracle``): the oracle attributors are measured against. Resumable (``--out``)."""

from __future__ import annotations

# Handlers import their stage code inside the function: `mda --help` must not load torch (cli/__init__).
from mda_fast.cli import flags


def register(subparsers) -> None:
    p = subparsers.add_parser("exact", help="exact metagradient oracle of a training window (replayed updates)",
                              description=__doc__, formatter_class=flags.FMT)
    p.add_argument("--checkpoints", required=True, metavar="DIR",
                   help="run directory of step<N>/ checkpoints written by training (mda demo: OUT/checkpoints)")
    flags.data(p, required=True)
    flags.steps(p, required=True, help="window [START, END): START must be a saved checkpoint")
    p.add_argument("--target", default="copy_target",
                   help="induction:L1.H1 (that head's induction score) or a probe (copy_target, prev_attn:L0.H3)")
    flags.out(p, required=True, help="output directory (metagrad.npz, manifest.json; resumable)")
    p.add_argument("--every", type=int, default=None, help="snapshot every K steps (memory; default ceil(sqrt(T)))")
    p.add_argument("--save-every", type=int, default=25, help="save the reverse sweep's progress every N steps")
    p.add_argument("--micro-batch", type=int, default=None, help="rows per micro-batch, as training used")
    p.add_argument("--attention", default=None, choices=("sdpa", "eager"),
                   help="the attention implementation training ran (sdpa for mda demo: bitwise replay)")
    p.add_argument("--probe-n", type=int, default=32, help="target sequences")
    p.add_argument("--probe-half", type=int, default=32, help="random tokens per sequence, repeated twice")
    p.add_argument("--vocab-low", type=int, default=32, help="lowest token id of the target sequences")
    p.add_argument("--vocab-high", type=int, default=127, help="token ids stay below this (127: printable bytes)")
    p.add_argument("--probe-seed", type=int, default=12345, help="seed of the target sequences")
    p.set_defaults(func=cmd_exact)


def cmd_exact(args) -> int:
    from mda_fast.data import parse_steps
    from mda_fast.oracle.run_exact import run_exact

    a, b = parse_steps(args.steps)
    res = run_exact(args.checkpoints, args.data, a, b, args.target, args.out, every=args.every,
                    save_every=args.save_every, micro_batch=args.micro_batch, attention=args.attention,
                    probe_n=args.probe_n, probe_half=args.probe_half, vocab_low=args.vocab_low,
                    vocab_high=args.vocab_high, probe_seed=args.probe_seed)
    print(f"exact metagradient of {args.target} over steps {a}:{b}: {len(res.weight_grad)} rows, target "
          f"{res.target:.6g} at step {b} -> {args.out}/metagrad.npz")
    return 0
