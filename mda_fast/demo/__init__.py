"""The embedded demo: a corpus built from text on every machine, a byte-level tokenizer, and a small
GPT-NeoX trained from scratch with Pythia-style checkpoints until its induction head forms.

    from mda_fast.demo import load_demo_config, run_demo_training
    summary = run_demo_training("runs/demo", load_demo_config())   # corpus -> train -> induction curve
    summary["window"]   # (last step < 0.1, first step > 0.5) of the best last-layer head

Pieces: :mod:`.corpus` (build_corpus, load_row_kinds), :mod:`.generators` (structured documents),
:mod:`.tokenizer` (byte_tokenizer, EOD_ID), :mod:`.config` (DemoConfig, demo.yaml),
:mod:`.measure` (induction_scores, formation_window), :mod:`.train_demo` (run_demo_training, CLI).
"""

from mda_fast.demo.config import DEFAULT_YAML, DemoConfig, load_demo_config
from mda_fast.demo.corpus import KINDS, build_corpus, load_row_kinds
from mda_fast.codec import BYTE_VOCAB_SIZE as VOCAB_SIZE, EOD_ID, byte_tokenizer, decode_ids, encode_bytes


def run_demo_training(*args, **kwargs):
    """See :func:`mda_fast.demo.train_demo.run_demo_training` (imported lazily: it pulls in torch)."""
    from mda_fast.demo.train_demo import run_demo_training as _run

    return _run(*args, **kwargs)


__all__ = ["DemoConfig", "load_demo_config", "DEFAULT_YAML", "KINDS", "build_corpus", "load_row_kinds",
           "EOD_ID", "VOCAB_SIZE", "byte_tokenizer", "decode_ids", "encode_bytes", "run_demo_training"]
