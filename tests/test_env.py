"""`mda env` and mda_fast.env: every backend is listed with a reason, JSON output parses, and a
missing extension is reported as unavailable with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mda_fast.env import BACKEND_ORDER, env_report, format_report
from mda_fast.ops import backend_status


def test_report_lists_every_backend_with_reason():
    rep = env_report()
    assert list(rep["backends"]) == list(BACKEND_ORDER)
    for name, b in rep["backends"].items():
        assert isinstance(b["available"], bool) and b["reason"], name
    assert rep["backends"]["torch"]["available"]
    for name, (ok, reason) in backend_status().items():  # the ops' own status, not a copy
        if name != "triton":
            assert (rep["backends"][name]["available"], rep["backends"][name]["reason"]) == (ok, reason), name
    import torch

    if not torch.cuda.is_available():
        assert not rep["backends"]["cuda"]["available"]
        assert not rep["backends"]["triton"]["available"]
    assert rep["threads"]["torch"] == torch.get_num_threads()
    text = format_report(rep)
    for name in BACKEND_ORDER:
        assert rep["backends"][name]["reason"] in text


def test_cli_json(capsys):
    from mda_fast.cli import main

    assert main(["env", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep["backends"]) == set(BACKEND_ORDER)
    assert rep["cpu"]["logical_cpus"] == os.cpu_count()


def test_missing_extension_is_reported():
    code = ("import sys; sys.modules['mda_fast._C'] = None\n"
            "from mda_fast.env import env_report, format_report\n"
            "rep = env_report(); b = rep['backends']['cpp']\n"
            "assert not b['available'] and 'not importable' in b['reason'], b\n"
            "print(format_report(rep))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "[no ] C++ CPU extension" in res.stdout
