"""One settings model: the CLI flags and the YAML keys derive from the settings dataclasses'
declarations (``attribution.run.settings.setting``), and `mda <command> --help` shows each default once."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys


from mda_fast.attribution.index.spec import IndexSpec
from mda_fast.attribution.run.settings import HEAD_DEFAULTS, HeadSettings, Settings, documented
from mda_fast.cli import attribution_cmd, build_parser, index_cmd

# an example value per field type, other than its default (what a user would type), and how it parses
EXAMPLES = {"float": ("0.25", 0.25), "int": ("7", 7)}
VALID = {"fisher": ("empirical", "empirical"), "preconditioner": ("identity", "identity"), "backend": ("torch", "torch")}


def _commands(parser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for name, p in sub.choices.items():
        out[name] = p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                out.update({f"{name} {n}": q for n, q in a.choices.items()})
    return out


def test_every_setting_is_a_flag_of_mda_run_and_lands_in_the_config(tmp_path):
    argv = ["run", "--out", str(tmp_path)]
    expected = {}
    for name, annotation, _, _, _ in documented(Settings):
        if name in ("device", "progress"):          # --device and --no-progress have their own flags
            continue
        typed, expected[name] = VALID.get(name) or EXAMPLES[annotation.split(" | ")[0]]
        argv += [f"--{name.replace('_', '-')}", typed]
    cfg = attribution_cmd._config(build_parser().parse_args(argv))
    got = cfg.settings.to_dict() if hasattr(cfg.settings, "to_dict") else dict(cfg.settings)
    assert {k: got[k] for k in expected} == expected


def test_flags_not_given_leave_the_yaml_value(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("settings: {fit_fraction: 0.5, batch_size: 3}\n")
    args = build_parser().parse_args(["fit", "--out", str(tmp_path), "--config", str(cfg_file), "--batch-size", "5"])
    cfg = attribution_cmd._config(args)
    s = cfg.settings if isinstance(cfg.settings, dict) else cfg.settings.to_dict()
    assert s["fit_fraction"] == 0.5 and s["batch_size"] == 5


def test_stage_flags_are_those_of_the_stage():
    cmds = _commands(build_parser())
    def flags_of(name):
        return {o for a in cmds[name]._actions for o in a.option_strings}
    assert "--fit-fraction" in flags_of("fit") and "--probe-n" not in flags_of("fit")
    assert "--probe-n" in flags_of("score") and "--fit-fraction" not in flags_of("score")
    assert "--fit-fraction" not in flags_of("index") and "--batch-size" in flags_of("index")
    assert {"--k", "--projection", "--seed", "--dtype"} <= flags_of("index")
    assert {"--n", "--seq-len", "--seed", "--vocab-low", "--vocab-high"} <= flags_of("heads")


def test_index_spec_from_flags():
    args = build_parser().parse_args(["index", "--out", "x", "--k", "8x16", "--projection", "seeded", "--seed", "3"])
    spec = index_cmd._spec(args)
    assert (spec.k, spec.projection, spec.seed, spec.dtype) == ((8, 16), "seeded", 3, "float16")
    assert index_cmd._spec(build_parser().parse_args(["index", "--out", "x"])) == IndexSpec()


def test_head_defaults_are_the_head_settings():
    assert HEAD_DEFAULTS == {f: d for f, _, d, _, _ in documented(HeadSettings)}


def test_help_shows_each_default_once():
    for name, p in _commands(build_parser()).items():
        text = p.format_help()
        assert "(default: None)" not in text, name
        options = re.split(r"\n  (?=-)", text.split("\noptions:", 1)[1])
        for block in options:
            assert block.count("default") <= 1, f"mda {name}: {' '.join(block.split())}"


def test_help_loads_no_torch():
    code = "import sys; from mda_fast.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
