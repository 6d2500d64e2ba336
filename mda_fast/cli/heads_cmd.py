"""`mda heads --model MODEL`: previous-token, duplicate-token, induction and prefix-matching scores of every
head on repeated random token sequences; a table on stdout, CSV/JSON/PNG under --out."""

from __future__ import annotations

# Handlers import their stage code inside the function: `mda --help` must not load torch (cli/__init__).
from pathlib import Path

from mda_fast import vocab
from mda_fast.attribution.run.settings import HEAD_DEFAULTS, HeadSettings
from mda_fast.cli import flags


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "heads", help="score every attention head (previous-token, duplicate, induction)",
        description=__doc__, formatter_class=flags.FMT)
    flags.model(p, required=True, help="local checkpoint directory, hub id (EleutherAI/pythia-70m), or "
                "package.module:name of a model, TransformerBridge or nnsight wrapper (or a function returning one)")
    flags.revision(p)
    # --n, --seq-len, --seed, --vocab-low, --vocab-high: from HeadSettings, the one declaration
    flags.settings(p, HeadSettings, skip=("metric", "top", "mode"), dest="heads")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sort", default="induction", type=vocab.metric, choices=vocab.HEAD_METRICS)
    flags.top_k(p, default=10, help="rows of the printed table: a count or a %% of the heads (100%% = all)")
    flags.out(p, help="write heads.csv, heads.json, heads.png here")
    p.set_defaults(func=cmd_heads)


def cmd_heads(args) -> int:
    from mda_fast.heads import head_scores
    from mda_fast.models import load_model
    from mda_fast.vocab import resolve_count

    h = {**HEAD_DEFAULTS, **flags.given_settings(args, "heads")}
    model, tokenizer = load_model(args.model, revision=args.revision, device=args.device)
    res = head_scores(model, n=h["n"], seq_len=h["seq_len"], seed=h["seed"], vocab_low=h["vocab_low"],
                      vocab_high=h["vocab_high"], batch_size=args.batch_size, tokenizer=tokenizer,
                      name=str(args.model), revision=args.revision)
    L, H = res.shape
    s = res.settings
    print(f"{args.model}{' @ ' + args.revision if args.revision else ''}: {L} layers x {H} heads; "
          f"{s['n']} sequences of {s['seq_len']} tokens in [{s['vocab_low']}, {s['vocab_high']}), seed {s['seed']}")
    print(res.table(sort=args.sort, k=resolve_count(args.top_k, L * H, "-k", cap=True)))
    if args.out is not None:
        out = Path(args.out)
        paths = [res.to_csv(out / "heads.csv"), res.to_json(out / "heads.json"), res.heatmap(out / "heads.png")]
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0
