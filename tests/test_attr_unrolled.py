"""SOURCE-style propagation (``attribution.unrolled``): the two spectral maps against dense matrix
functions, the propagated queries against exact linearised training, given queries in the score
pass, and the trajectory run with ``propagation="source"``."""

import numpy as np
import pytest
import torch

from mda_fast.attribution.fit.factors import BlockFactors, FactorSet
from mda_fast.attribution.pipeline import Pipeline
from mda_fast.attribution.trajectory import TrajectoryRun
from mda_fast.attribution.unrolled import adam_step_size, carry, segment_response, source_queries
from mda_fast.data import select_steps
from mda_fast.errors import ConfigError

from test_attr_bruteforce import one_thread  # noqa: F401  (autouse fixture)
from test_attr_trajectory import PROBES, RPS, SETTINGS, UNITS, _load, trained  # noqa: F401  (module fixture)


def _factors(O: int, I: int, seed: int, scale: float = 1.0) -> FactorSet:
    g = torch.Generator().manual_seed(seed)
    QA = torch.linalg.qr(torch.randn(I, I, generator=g, dtype=torch.float64))[0]
    QS = torch.linalg.qr(torch.randn(O, O, generator=g, dtype=torch.float64))[0]
    lam = scale * torch.rand(O, I, generator=g, dtype=torch.float64) ** 2
    lam[0, 0] = 0.0                        # an exactly flat direction: the limit K / c must hold there
    eye = torch.eye(1, dtype=torch.float64)
    return FactorSet({"b": BlockFactors("b", eye, eye, QA, QS, lam, 0.1)})


def _dense(f: BlockFactors, fn) -> torch.Tensor:
    """fn(H) for H = (Q_S (x) Q_A) diag(lam) (Q_S (x) Q_A)^T acting on row-major vec(V [O, I])."""
    Q = torch.kron(f.Q_S, f.Q_A)
    return Q @ torch.diag(fn(f.lam.reshape(-1))) @ Q.T


@pytest.mark.parametrize("c,K", [(0.7, 5), (25.0, 40)])
def test_spectral_maps_equal_dense_matrix_functions(c, K):
    fs = _factors(5, 7, 0, scale=3.0)
    f = fs["b"]
    V = torch.randn(3, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    phi = _dense(f, lambda lam: torch.where(lam > 0, -torch.expm1(-c * lam) / (K * lam.clamp_min(1e-300)),
                                            torch.full_like(lam, c / K)))
    psi = _dense(f, lambda lam: torch.exp(-c * lam))
    got_phi = segment_response(fs, {"b": V.float()}, c, K, backend="torch")["b"].double()
    got_psi = carry(fs, {"b": V.float()}, c, backend="torch")["b"].double()
    want_phi = (V.reshape(3, -1) @ phi.T).reshape(3, 5, 7)
    want_psi = (V.reshape(3, -1) @ psi.T).reshape(3, 5, 7)
    assert torch.allclose(got_phi, want_phi, rtol=1e-4, atol=1e-6 * want_phi.abs().max())
    assert torch.allclose(got_psi, want_psi, rtol=1e-4, atol=1e-6 * want_psi.abs().max())


def test_long_segment_is_inverse_curvature_over_K():
    fs = _factors(4, 6, 1, scale=2.0)
    fs["b"].lam.clamp_(min=0.05)
    V = {"b": torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(2))}
    got = segment_response(fs, V, 1e4, 10, backend="torch")["b"].double()
    want = (V["b"].double().reshape(2, -1) @ _dense(fs["b"], lambda lam: 1.0 / (10 * lam)).T).reshape(2, 4, 6)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def test_propagated_queries_equal_linearised_training():
    """Quadratic training, one curvature per segment, learning rate eta, loss = mean over T tokens:
    d f(theta_T) / d(weight of a row at step j), averaged over the steps j of its segment, equals
    -g^T q_l (B = 1) up to the discretisation of exp(-eta K H) (small eta: ~1e-3)."""
    T, eta, Ks = 8, 2e-3, (300, 200, 250)
    segs = [_factors(3, 4, 10 + i, scale=4.0) for i in range(3)]
    H = [_dense(f["b"], lambda lam: lam / T) for f in segs]        # H_train = Lambda / T
    gen = torch.Generator().manual_seed(3)
    gf = torch.randn(12, dtype=torch.float64, generator=gen)
    g = torch.randn(12, dtype=torch.float64, generator=gen)
    n = 12
    # exact: theta_{k+1} = theta_k - eta (H theta_k + w g / T) for the row's step; the response at T
    after = [torch.eye(n, dtype=torch.float64)]
    for Hl, K in zip(reversed(H), reversed(Ks)):                    # propagator from each segment's end to T
        after.insert(0, after[0] @ torch.linalg.matrix_power(torch.eye(n, dtype=torch.float64) - eta * Hl, K))
    qs = source_queries({"b": gf.reshape(1, 3, 4).float()},
                        [(f, eta * K / T, K) for f, K in zip(segs, Ks)], backend="torch")
    for seg, (Hl, K) in enumerate(zip(H, Ks)):
        step = torch.eye(n, dtype=torch.float64) - eta * Hl
        mean_resp = sum(torch.linalg.matrix_power(step, K - 1 - j) for j in range(K)) / K
        exact = -(gf @ after[seg + 1] @ mean_resp @ (eta * g / T))
        source = -(g @ qs[seg]["b"].double().reshape(-1))
        assert abs(float(source) - float(exact)) <= 5e-3 * abs(float(exact)), (seg, float(source), float(exact))


def test_given_queries_reproduce_the_model_own_scores(trained, tmp_path):
    d, src, _ = trained
    model, tok = _load(d)(8)
    window = select_steps(src, 4, 8, RPS)
    plain = Pipeline(model, window, tmp_path / "p", PROBES, units=UNITS, tokenizer=tok, settings=SETTINGS, log=None)
    table = plain.run(top_k=None)
    q = plain.mda.queries()
    for sub in ("shared", "separate"):         # fit_and_score's shared pass, and fit; score
        p = Pipeline(model, window, tmp_path / sub, PROBES, units=UNITS, tokenizer=tok, settings=SETTINGS, log=None)
        p.mda.use_queries(q, "the model's own")
        got = p.run(top_k=None) if sub == "shared" else (p.fit(), p.score(replace=True))[1]
        assert np.allclose(got.scores, table.scores, rtol=1e-4, atol=1e-6 * np.abs(table.scores).max())
        assert got.manifest["fingerprint"] != table.manifest["fingerprint"]   # the key is in the identity
    p.mda.use_queries({k: 2 * v for k, v in q.items()}, "doubled")
    doubled = p.score(replace=True)
    assert np.allclose(doubled.scores, 2 * table.scores, rtol=1e-4, atol=1e-6 * np.abs(table.scores).max())
    with pytest.raises(ConfigError, match="shapes"):
        p.mda.use_queries({k: v[:, :1] for k, v in q.items()}, "cut")
    with pytest.raises(ConfigError, match="need a key"):
        p.mda.use_queries(q, "")


def test_trajectory_source_run(trained, tmp_path):
    d, src, saved = trained
    ckpts = {s: d / "ckpt" / f"step{s}" for s in saved}
    run = TrajectoryRun(_load(d), src, (2, 8), RPS, tmp_path / "s", PROBES, UNITS, 2, saved, SETTINGS, log=None,
                        propagation="source", checkpoints=ckpts)
    table = run.run()
    indep = TrajectoryRun(_load(d), src, (2, 8), RPS, tmp_path / "i", PROBES, UNITS, 2, saved, SETTINGS,
                          log=None).run()
    assert np.array_equal(table.row_ids, indep.row_ids) and np.isfinite(table.scores).all()
    assert table.manifest["identity"]["propagation"] == "source"
    assert table.manifest["fingerprint"] != indep.manifest["fingerprint"]
    # the last segment's query is Phi_L of the end's probe gradient: its rows rank as
    # g^T Q diag((1 - exp(-c lam)) / lam) Q^T grad f, not as MDA's 1 / (lam + damping)
    assert not np.allclose(table.scores, indep.scores, rtol=1e-3)
    again = run.run()                           # a second run re-scores with the same queries
    assert np.array_equal(again.scores, table.scores)
    given = TrajectoryRun(_load(d), src, (2, 8), RPS, tmp_path / "g", PROBES, UNITS, 2, saved, SETTINGS, log=None,
                          propagation="source", step_size=0.5).run()
    assert np.isfinite(given.scores).all() and not np.allclose(given.scores, table.scores, rtol=1e-3)
    with pytest.raises(ConfigError, match="step_size"):
        TrajectoryRun(_load(d), src, (2, 8), RPS, tmp_path / "z", PROBES, UNITS, 2, saved, SETTINGS,
                      propagation="source", step_size=0.0)
    with pytest.raises(ConfigError, match="checkpoint directories"):
        TrajectoryRun(_load(d), src, (2, 8), RPS, tmp_path / "x", PROBES, UNITS, 2, saved, SETTINGS, propagation="source")
    with pytest.raises(ConfigError, match="identity"):
        TrajectoryRun(_load(d), src, (2, 8), RPS, tmp_path / "y", PROBES, UNITS, 2, saved,
                      dict(SETTINGS, preconditioner="identity"), log=None, propagation="source",
                      checkpoints=ckpts).run()


def test_cli_run_propagation_source_equals_the_api(trained, tmp_path):
    from mda_fast.attribution import load_scores
    from mda_fast.cli import main

    d, src, saved = trained
    np.save(tmp_path / "rows.npy", src.read(np.arange(len(src))))
    args = ["run", "--model", str(d / "ckpt"), "--data", str(tmp_path / "rows.npy"), "--steps", "2:8",
            "--rows-per-step", str(RPS), "--units", *UNITS, "--probes", *PROBES, "--no-progress", "--segments", "2",
            "--propagation", "source",
            *[x for k, v in SETTINGS.items() if k != "progress" for x in (f"--{k.replace('_', '-')}", str(v))]]
    assert main([*args, "--out", str(tmp_path / "cli")]) == 0
    ckpts = {s: d / "ckpt" / f"step{s}" for s in saved}
    api = TrajectoryRun(_load(d), src, (2, 8), RPS, tmp_path / "api", PROBES, UNITS, 2, saved, SETTINGS, log=None,
                        propagation="source", checkpoints=ckpts).run()
    cli = load_scores(str(tmp_path / "cli" / "scores"))
    assert np.array_equal(cli.scores, api.scores) and np.array_equal(cli.row_ids, api.row_ids)


def test_adam_step_size_reads_the_block_second_moments(trained):
    """lr over the median of sqrt(v / (1 - beta2^t)) + eps over exactly the block's weight entries."""
    from mda_fast.training import OptimConfig, read_state
    from mda_fast.training.optim import lr_at

    d, _, _ = trained
    ck = d / "ckpt" / "step8"
    model, _ = _load(d)(8)
    before = [p.detach().clone() for p in model.parameters()]
    p = Pipeline(model, None, "unused", PROBES, units=UNITS, settings=SETTINGS, log=None)
    m = p.mda
    eta = adam_step_size(ck, m.model, m.adapter, m.blocks, (4, 8))
    assert all(torch.equal(a, b) and b.grad is None for a, b in zip(before, model.parameters()))
    sd = torch.load(ck / "optimizer.pt", weights_only=True)
    names = [n for n, q in model.named_parameters() if q.requires_grad]
    decay = [n for n in names if dict(model.named_parameters())[n].ndim >= 2]
    order = decay + [n for n in names if n not in decay]             # build_optimizer's two groups
    state = dict(zip(order, (sd["state"][i] for i in range(len(order)))))
    g = sd["param_groups"][0]
    vals = []
    for b in m.blocks:
        for piece in b.pieces:
            st = state[piece.module + ".weight"]
            den = (st["exp_avg_sq"] / (1 - g["betas"][1] ** float(st["step"]))).sqrt() + g["eps"]
            vals.append(den[piece.out_rows or slice(None), piece.in_cols or slice(None)].reshape(-1))
    cfg = OptimConfig.from_dict(read_state(ck)["optim"])
    lr = np.mean([lr_at(cfg, s) for s in range(4, 8)])
    assert eta == pytest.approx(lr / float(torch.cat(vals).double().median()), rel=1e-6)
