"""`mda intervene`, `mda analyze`, `mda augment`, `mda report`: causal validation of attribution
scores by retraining with rows removed / duplicated / inserted, and what the top rows look like."""

from __future__ import annotations

# Handlers import their stage code inside the function: `mda --help` must not load torch (cli/__init__).
from pathlib import Path

from mda_fast import vocab
from mda_fast.cli import flags
from mda_fast.errors import ConfigError

_FMT = flags.FMT


def _unit(text: str | None):
    from mda_fast.units import Unit

    if text is None:
        return None
    u = Unit.parse(text)
    if u.head is None:
        raise ConfigError(f"--unit {text!r} names a whole module; mda intervene tracks a head, e.g. L1.H3")
    return u.layer, u.head


def _window(text: str) -> tuple[int, int]:
    from mda_fast.data import parse_steps

    return parse_steps(text)


def register(subparsers) -> None:
    for add in (_add_intervene, _add_analyze, _add_augment, _add_report):
        add(subparsers)


def _add_intervene(subparsers) -> None:
    p = subparsers.add_parser("intervene", help="retrain a window with top rows deleted/duplicated vs random controls",
                              description=__doc__, formatter_class=_FMT)
    flags.model(p, required=True, help="the training run: a directory of step<N>/ checkpoints")
    flags.data(p, required=True, help="training rows in training order (.bin/.idx prefix, .npy, ...)")
    p.add_argument("--scores", required=True, type=Path, help="score run directory (mda score --out DIR/scores)")
    flags.steps(p, required=True, help="window [START, END) of optimizer steps whose rows the plans modify")
    p.add_argument("--end-step", type=int, default=None, help="train until this step (default: END)")
    p.add_argument("--plan", action="append", default=None, metavar="SPEC",
                   help="repeatable: baseline | delete | duplicate | random-delete | random-duplicate | "
                        "kind-random-delete | kind-random-duplicate (random rows of the top rows' kinds, same "
                        "composition; kinds from the corpus's .kinds.json, else detected) | "
                        "insert-synthetic:path=PREFIX; options after ':' e.g. delete:top=5%%,tail=negative, "
                        "delete:column=feature:copy_share (rank by a row feature), "
                        "random-delete:among=kind:repeated (default: baseline, delete, random-delete, "
                        "kind-random-delete, duplicate, random-duplicate, kind-random-duplicate)")
    flags.top_k(p, help="rows each plan without top= selects: a %% of the window (10%%) or a count")
    p.add_argument("--column", default=None, help="scores column (default: the one naming the unit)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated; 0 = original data order")
    p.add_argument("--cadence", type=int, default=10, help="track the head every N steps")
    flags.units(p, help="tracked heads L1.H3 ... (a block mode suffix is accepted and ignored; default: the "
                        "first unit of the scores)")
    p.add_argument("--metric", default="induction", type=vocab.metric, choices=("induction", "previous_token"),
                   help="the head score that says the tracked head formed (prev_token: old spelling)")
    p.add_argument("--threshold", default="50%", help="emergence threshold: a value or a %% of the baseline peak")
    p.add_argument("--jobs", type=int, default=1, help="retraining worker processes (one core each)")
    p.add_argument("--shuffle-block", type=int, default=8, help="seed k>0 permutes rows within blocks of this many steps")
    p.add_argument("--lr", type=float, default=None, help="override the checkpoint's learning rate")
    p.add_argument("--tokenizer", default=None, help="local tokenizer for decoding rows (default: bytes if it fits)")
    p.add_argument("--no-report", action="store_true")
    flags.out(p, required=True, help="experiment directory (re-running resumes)")
    p.set_defaults(func=cmd_intervene)


def _add_analyze(subparsers) -> None:
    a = subparsers.add_parser("analyze", help="document kinds enriched among the top-scored rows",
                              description="Share of LaTeX/markup/code/records/repeated/prose rows among the top "
                                          "rows vs the window; kinds.json + kinds.png.", formatter_class=_FMT)
    a.add_argument("--scores", required=True, type=Path, help="score run directory")
    flags.data(a, required=True, help="the rows the scores refer to")
    flags.top_k(a, default="10%", help="top rows: a %% of the scored rows or a count")
    a.add_argument("--tail", default="positive", choices=("positive", "negative"))
    a.add_argument("--column", default=None)
    a.add_argument("--sample", type=int, default=5000, help="window rows sampled for the baseline shares")
    a.add_argument("--tokenizer", default=None)
    flags.out(a, required=True)
    a.set_defaults(func=cmd_analyze)


def _add_augment(subparsers) -> None:
    g = subparsers.add_parser("augment", help="synthesize rows with repetitive structure (.bin/.idx)",
                              description="Seeded synthetic rows (repeated spans, markup, tables) for "
                                          "insert-synthetic plans.", formatter_class=_FMT)
    flags.out(g, required=True, help="output prefix (writes PREFIX.bin, PREFIX.idx, PREFIX.kinds.json)")
    g.add_argument("--n", type=int, required=True, help="rows to write")
    g.add_argument("--seq-len", type=int, required=True, help="tokens per row (the training rows' length)")
    g.add_argument("--kinds", default="spans,markup,table",
                   help="generators (mda_fast.intervene.generators): markup, latex, records, table, repeated, "
                        "spans, tiled")
    g.add_argument("--max-gap", type=int, default=None, help="max characters between span copies")
    g.add_argument("--tokenizer", default=None, help="local tokenizer (default: bytes)")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=cmd_augment)


def _add_report(subparsers) -> None:
    r = subparsers.add_parser("report", help="HTML report of an intervention experiment",
                              description="Writes EXP/report.html and its PNGs.", formatter_class=_FMT)
    flags.out(r, required=True, help="experiment directory (mda intervene --out)")
    r.add_argument("--scores", type=Path, default=None, help="default: the experiment's scores")
    flags.data(r, help="rows for the top-row section")
    r.add_argument("--tokenizer", default=None)
    r.set_defaults(func=cmd_report)


def cmd_intervene(args) -> int:
    from mda_fast.intervene.experiment import DEFAULT_PLANS, run_experiment
    from mda_fast.intervene.plans import parse_plan_spec

    raw = list(args.plan or DEFAULT_PLANS)
    specs = [parse_plan_spec(s) for s in raw]
    for text, s in zip(raw, specs):
        if args.top_k is not None and "top=" not in text:
            s.top = str(args.top_k)
        if args.column is not None and s.column is None:
            s.column = args.column
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r} must be comma-separated integers") from None
    from mda_fast.intervene.summary import format_summary

    units = [_unit(u) for u in args.units] if args.units else None
    summary = run_experiment(args.out, args.model, args.data, args.scores, _window(args.steps), plans=specs,
                             seeds=seeds, cadence=args.cadence, end_step=args.end_step,
                             units=units, metric=args.metric, threshold=args.threshold,
                             optim={"lr": args.lr} if args.lr else None, shuffle_block=args.shuffle_block,
                             tokenizer=args.tokenizer, report=not args.no_report,
                             jobs=args.jobs)
    print(format_summary(summary))
    print(f"wrote {args.out}/summary.json, curves.png" + ("" if args.no_report else ", report.html"))
    return 0


def cmd_analyze(args) -> int:
    from mda_fast.intervene.analyze import run_analyze

    res = run_analyze(args.scores, args.data, args.out, column=args.column, top=args.top_k, tail=args.tail,
                      tokenizer=args.tokenizer, sample=args.sample)
    print(f"{'kind':<10} {'top':>7} {'window':>7} {'enrichment':>10}")
    for k in res["kinds"]:
        e = res["enrichment"][k]
        print(f"{k:<10} {100 * res['share_top'][k]:6.1f}% {100 * res['share_window'][k]:6.1f}% "
              f"{('x%.2f' % e) if e is not None else '-':>10}")
    print(f"wrote {args.out}/kinds.json, kinds.png")
    return 0


def cmd_augment(args) -> int:
    from mda_fast.intervene.augment import write_synthetic

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    meta = write_synthetic(args.out, args.n, args.seq_len, tokenizer=args.tokenizer, kinds=kinds, seed=args.seed,
                           max_gap=args.max_gap)
    print(f"wrote {meta['n']} rows of {meta['seq_len']} tokens ({', '.join(meta['generators'])}) to {args.out}.bin/.idx")
    return 0


def cmd_report(args) -> int:
    from mda_fast.intervene.report import write_report

    if not Path(args.out).is_dir():
        raise ConfigError(f"experiment directory {args.out} does not exist")
    path = write_report(args.out, scores=args.scores, source=args.data, tokenizer=args.tokenizer)
    print(f"wrote {path}")
    return 0
