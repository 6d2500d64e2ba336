"""Retraining tasks in worker processes give the same curves as in-process, and finished runs are reused."""

import json
import pickle

import numpy as np

from mda_fast.intervene.fingerprint import run_fingerprint
from mda_fast.intervene.plans import Plan
from mda_fast.intervene.retrain import optim_from_checkpoint
from mda_fast.intervene.runner import RunShared, RunTask, run_tasks
from mda_fast.intervene.track import repeated_random_tokens
from test_intervene_helpers import RPS, tiny_setup
from test_intervene_helpers import one_thread  # noqa: F401 (autouse fixture)


def _tasks(out, window):
    plans = [Plan("baseline", "baseline", window, RPS),
             Plan("delete", "delete", window, RPS, delete=np.arange(RPS * 2, RPS * 2 + 3)),
             Plan("dup", "duplicate", window, RPS, sources=np.array([RPS * 3]), targets=np.array([RPS * 4]))]
    return [RunTask(p.name, s, p, None, out / p.name / f"seed{s}", run_fingerprint(p, None, "t", s))
            for p in plans for s in (0, 1)]


def test_parallel_workers_equal_in_process_and_resume(tmp_path):
    from mda_fast.data import open_source

    data, ck, _ = tiny_setup(tmp_path, n_rows=48, ckpt_steps=(0, 2))
    src = open_source(data)
    assert pickle.loads(pickle.dumps(src)).read(np.arange(3)).tolist() == src.read(np.arange(3)).tolist()
    shared = RunShared(checkpoint=str(ck / "step2"), source=src, end_step=6, optim=optim_from_checkpoint(ck / "step2"),
                       cadence=2, shuffle_block=2, probe_tokens=repeated_random_tokens(3, 4, 32, 127, 0),
                       heldout=None, stop=None)
    one = run_tasks(_tasks(tmp_path / "one", (2, 5)), shared, jobs=1, log=None)
    two = run_tasks(_tasks(tmp_path / "two", (2, 5)), shared, jobs=2, log=None)
    assert set(one) == set(two) and len(one) == 6
    for k in one:
        for metric in ("induction", "prev_token", "probe"):
            assert one[k][metric] == two[k][metric], (k, metric)       # bitwise: same math, one thread each
    assert one[("delete", 0)]["probe"] != one[("baseline", 0)]["probe"]
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "two").glob("*/seed*/curve.json")}
    again = run_tasks(_tasks(tmp_path / "two", (2, 5)), shared, jobs=2, log=None)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps and again.keys() == two.keys()
    # a run whose inputs changed is not reused
    changed = _tasks(tmp_path / "two", (2, 5))
    changed[0].key = "different"
    run_tasks(changed[:1], shared, jobs=1, log=None)
    assert json.loads((tmp_path / "two/baseline/seed0/curve.json").read_text())["fingerprint"] == "different"
