"""The flags every ``mda`` command shares, defined once so each means the same everywhere.

    --model      checkpoint directory (or a run's directory of step<N>/ checkpoints) or hub id
    --revision   hub revision or step sub-directory (step1000)
    --data       training rows: .bin/.idx prefix or piece, .npy, parquet, text files
    --steps A:B  a window of optimizer steps [A, B); rows [rps*A, rps*B)
    --rows-per-step  rows per optimizer step (Pythia: 1024)
    --units      heads: L1.H3 (attribution commands: L1.H3.<mode>, mode qk | v | o | qkvo, default qk;
                 or a whole linear module with its bias: L3.attention.dense, L3.mlp.dense_4h_to_h[.nobias]),
                 or 'auto' where a command can choose them
    --probes     copy_target, copy_target2, prev_attn:L1.H3, module:function (a probe is a query
                 loss, not a head metric: metrics are previous_token, induction, ...; mda_fast.vocab)
    -k/--top-k   how many: a count (20) or a percentage of what is on offer (10%)

One spelling per concept (mda_fast.vocab); old spellings print a one-line note and still work.
    --out        the command's output directory (or prefix, for files)
"""

from __future__ import annotations

import argparse

from mda_fast import vocab
from mda_fast.attribution.run.settings import documented  # torch-free: `mda --help` loads no torch


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows each option's default once: appended only when there is one to show (not
    None, False or an empty list) and the help text does not already say it."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS) or default == [] or \
                action.option_strings == [] or isinstance(action, argparse._HelpAction):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


FMT = HelpFormatter
_TYPES = {"float": float, "int": int, "str": str}


def settings(p, cls, stages=None, skip=(), dest: str = "settings") -> None:
    """One flag per field of the settings dataclass ``cls`` (``--fit-fraction`` for ``fit_fraction``),
    of the given ``stages`` (default all), its type, help and default from the field's one
    declaration (``attribution.run.settings.setting``). The flags default to None so that a run
    config's value stands unless the flag is given; :func:`given_settings` collects those given."""
    for name, annotation, default, stage, doc in documented(cls):
        if name in skip or (stages is not None and stage not in stages):
            continue
        kind = _TYPES.get(annotation.split(" | ")[0], str)    # e.g. IndexSpec.k: "16", "16x32", "full"
        shown = "" if default is None else f" (default: {default})"
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, dest=f"{dest}__{name}",
                       metavar=name.split("_")[-1].upper(), help=doc.replace("%", "%%") + shown)


def given_settings(args, dest: str = "settings") -> dict:
    """{name: value} of the settings flags given on the command line (see :func:`settings`)."""
    prefix = f"{dest}__"
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def model(p, required: bool = False, help: str = "checkpoint directory or hub id") -> None:
    p.add_argument("--model", required=required, default=None, help=help)


def revision(p) -> None:
    p.add_argument("--revision", default=None, help="hub revision or step sub-directory (step1000)")


def data(p, required: bool = False, help: str = "training rows (.bin/.idx prefix or piece, .npy, parquet, text)") -> None:
    p.add_argument("--data", required=required, default=None, help=help)


def steps(p, required: bool = False, help: str = "window of optimizer steps [START, END)") -> None:
    p.add_argument("--steps", required=required, default=None, metavar="START:END", help=help)


def rows_per_step(p, default: int | None = None) -> None:
    p.add_argument("--rows-per-step", type=int, default=default, help="rows per optimizer step (Pythia: 1024)")


def units(p, help: str = "heads: L1.H3 ... (block mode suffix .qk | .v | .o | .qkvo, default qk), whole modules: "
                         "L3.attention.dense ... (with the bias; .nobias: without; .bias: required), or 'auto'") -> None:
    p.add_argument("--units", nargs="+", default=None, metavar="UNIT", help=help)


def probes(p) -> None:
    p.add_argument("--probes", nargs="+", default=None, metavar="PROBE",
                   help="copy_target, copy_target2, prev_attn:L1.H3, module:function (query losses; "
                        "not head metrics)")


def top_k(p, default=None, help: str = "top rows per side: a count or a %% of the scored rows") -> None:
    p.add_argument("-k", "--top-k", type=vocab.count_or_share, default=default, metavar="K|P%", help=help)


def out(p, required: bool = False, help: str = "output directory") -> None:
    p.add_argument("--out", required=required, default=None, metavar="DIR", help=help)
