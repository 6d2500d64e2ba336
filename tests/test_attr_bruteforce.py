"""Pipeline scores and EK-FAC factors against brute force on tiny GPT-NeoX and GPT-2 models.

Brute force: per-sample gradients by full autograd at batch size 1 (float64 copy of the model),
sliced from the weight gradients by hand from the HF layouts (mda-reference §3, not through the
adapter); the EK-FAC matrix built explicitly as Q diag(Lambda + damping) Q^T with
Q = kron(Q_S, Q_A) (row-major vec of [O, I]) and solved with torch.linalg.solve.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mda_fast.attribution import MDA, Settings
from oracles import sample_labels
from mda_fast.data import ArraySource
from mda_fast.models import make_tiny_model
from mda_fast.probes import CallableProbe, CopyTargetProbe, make_data

LAYER, HEAD = 1, 2


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls: one thread avoids OpenMP oversubscription on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
N_ROWS, ROW_LEN = 12, 17


SMALL = dict(hidden_size=32, intermediate_size=64)  # d_head 8: dense H of a qk block is 512 x 512


def tiny(arch, seed):
    kw = dict(SMALL) if arch == "neox" else dict(n_embd=32, n_inner=64)
    return make_tiny_model(arch, seed=seed, **kw)


def window(n=N_ROWS, L=ROW_LEN, seed=0, vocab=256):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, vocab, size=(n, L))
    rows[::3, L // 2 :] = rows[::3, : L - L // 2]  # some repeated structure
    return ArraySource(rows, name="toy", row_id_offset=1000, vocab_size=vocab)


def hand_slices(model, arch, grads: bool = True) -> dict[str, torch.Tensor]:
    """{kind: [O, I]} of head HEAD in layer LAYER, from the HF weight layouts (grad or weight)."""
    cfg = model.config
    d = cfg.hidden_size
    hs = d // cfg.num_attention_heads
    pick = (lambda p: p.grad) if grads else (lambda p: p.data)
    if arch == "neox":
        att = model.gpt_neox.layers[LAYER].attention
        W, D = pick(att.query_key_value.weight), pick(att.dense.weight)  # [3d, d], [d, d]
        base = 3 * hs * HEAD
        return {"qk": W[base : base + 2 * hs], "v": W[base + 2 * hs : base + 3 * hs], "o": D[:, hs * HEAD : hs * (HEAD + 1)]}
    att = model.transformer.h[LAYER].attn
    W, D = pick(att.c_attn.weight).T, pick(att.c_proj.weight).T  # Conv1D stores [in, out]
    q, k, v = (W[g * d + hs * HEAD : g * d + hs * (HEAD + 1)] for g in range(3))
    return {"qk": torch.cat([q, k]), "v": v, "o": D[:, hs * HEAD : hs * (HEAD + 1)]}


def row_grads(model64, arch, tokens, labels=None) -> dict[str, torch.Tensor]:
    """Gradient of one row's summed CE (labels default to the row's next tokens)."""
    model64.zero_grad(set_to_none=True)
    logits = model64(input_ids=tokens[None, :-1]).logits[0]
    y = tokens[1:] if labels is None else labels
    F.cross_entropy(logits, y, reduction="sum").backward()
    return {k: v.clone() for k, v in hand_slices(model64, arch).items()}


def probe_grads(model64, arch, probe, data) -> dict[str, torch.Tensor]:
    model64.zero_grad(set_to_none=True)
    kw = {"output_attentions": True} if probe.needs_attentions else {}
    (probe(model64(input_ids=data, **kw), data) / data.shape[0]).backward()
    return {k: v.clone() for k, v in hand_slices(model64, arch).items()}


def dense_solve(f, v: torch.Tensor) -> torch.Tensor:
    """(Q diag(Lambda + damping) Q^T)^-1 vec(v), built densely and solved; returns [O, I]."""
    Q = torch.kron(f.Q_S.double(), f.Q_A.double())
    H = Q @ torch.diag(f.lam.double().flatten() + f.damping) @ Q.T
    return torch.linalg.solve(H, v.double().flatten()).view_as(v)


def target_probe(outputs, tokens):
    """A second probe: mean logit of token 7 at every position, summed over the batch."""
    return outputs.logits[..., 7].float().mean(-1).sum()


@pytest.mark.parametrize("arch", ["neox", "gpt2"])
def test_scores_equal_dense_bruteforce(arch, tmp_path):
    model = tiny(arch, 1)
    src = window()
    probes = [CopyTargetProbe(), CallableProbe(target_probe, name="logit7")]
    mda = MDA(model, [f"L{LAYER}.H{HEAD}.qkvo", f"L{LAYER}.H{HEAD}.qk"], probes,
              settings=Settings(fit_fraction=0.5, batch_size=5, progress=False, probe_n=6, probe_seq_len=16))
    table = mda.fit(src).score(src, str(tmp_path / "run"))
    assert table.columns == [f"L{LAYER}.H{HEAD}.qkvo/copy_target", f"L{LAYER}.H{HEAD}.qkvo/logit7",
                             f"L{LAYER}.H{HEAD}.qk/copy_target", f"L{LAYER}.H{HEAD}.qk/logit7"]
    np.testing.assert_array_equal(table.row_ids, src.row_ids())

    model64 = copy.deepcopy(model).double()
    queries = {}
    for p in probes:
        pg = probe_grads(model64, arch, p, mda.probe_data[p.name])
        queries[p.name] = {k: dense_solve(mda.factors[f"L{LAYER}.H{HEAD}.{k}"], pg[k]) for k in pg}
    expected = np.zeros((N_ROWS, 4))
    for z in range(N_ROWS):
        G = row_grads(model64, arch, torch.as_tensor(src.read([z])[0]))
        for pi, p in enumerate(probes):
            per_kind = {k: -(G[k] * queries[p.name][k]).sum().item() for k in G}
            expected[z, pi] = sum(per_kind.values())  # qkvo = qk + v + o blocks
            expected[z, 2 + pi] = per_kind["qk"]
    err = np.abs(table.scores - expected).max() / np.abs(expected).max()
    print(f"{arch}: max relative error of scores vs dense brute force {err:.2e}")
    assert err <= 1e-4
    # per-row loss is the summed CE of the row
    with torch.no_grad():
        toks = torch.as_tensor(src.read(np.arange(N_ROWS)))
        lg = model64(input_ids=toks[:, :-1]).logits
        loss = F.cross_entropy(lg.transpose(1, 2), toks[:, 1:], reduction="none").sum(1).numpy()
    np.testing.assert_allclose(table.loss, loss, rtol=1e-5)


@pytest.mark.parametrize("fisher", ["empirical", "true"])
def test_factors_equal_bruteforce(fisher):
    """A, S by hand-made hooks; Lambda from batch-size-1 autograd gradients (per-sample, not summed)."""
    arch = "neox"
    model = tiny(arch, 2)
    src = window(n=10, seed=3)
    mda = MDA(model, [f"L{LAYER}.H{HEAD}.qkvo"], ["copy_target"],
              settings=Settings(fit_rows=7, fit_seed=5, fisher=fisher, batch_size=3, progress=False))
    mda.fit(src)
    fs = mda.factors
    used = np.array(fs.manifest["fit_row_ids"]) - 1000
    assert len(used) == 7 and fs.manifest["rows_used"] == 7

    model64 = copy.deepcopy(model).double()
    att = model64.gpt_neox.layers[LAYER].attention
    hs = model.config.hidden_size // model.config.num_attention_heads
    rows = slice(3 * hs * HEAD, 3 * hs * HEAD + 2 * hs)
    store = {}
    h1 = att.query_key_value.register_forward_hook(lambda m, i, o: store.update(x=i[0], qkv=o) or o.retain_grad())
    h2 = att.dense.register_forward_hook(lambda m, i, o: store.update(z=i[0], out=o) or o.retain_grad())
    A = {k: 0 for k in "qvo"}
    S = {k: 0 for k in "qvo"}
    lam_G, n_tok = [], 0
    for z in used:
        tokens = torch.as_tensor(src.read([z])[0])
        model64.zero_grad(set_to_none=True)
        logits = model64(input_ids=tokens[None, :-1]).logits
        labels = tokens[1:] if fisher == "empirical" else sample_labels(logits.detach().float(), torch.tensor([z + 1000]), 5)[0]
        F.cross_entropy(logits[0], labels, reduction="sum").backward()
        x, zz = store["x"][0], store["z"][0][:, hs * HEAD : hs * (HEAD + 1)]
        gq, gv = store["qkv"].grad[0][:, rows], store["qkv"].grad[0][:, rows.stop : rows.stop + hs]
        go = store["out"].grad[0]
        A["q"] = A["q"] + x.T @ x
        A["o"] = A["o"] + zz.T @ zz
        S["q"] = S["q"] + gq.T @ gq
        S["v"] = S["v"] + gv.T @ gv
        S["o"] = S["o"] + go.T @ go
        n_tok += x.shape[0]
        lam_G.append({k: v.clone() for k, v in hand_slices(model64, arch).items()})
    h1.remove(), h2.remove()
    for kind, a_key, s_key in (("qk", "q", "q"), ("v", "q", "v"), ("o", "o", "o")):
        f = fs[f"L{LAYER}.H{HEAD}.{kind}"]
        torch.testing.assert_close(f.A, A[a_key] / n_tok, rtol=1e-4, atol=1e-6 * float(f.A.abs().max()))
        torch.testing.assert_close(f.S, S[s_key] / n_tok, rtol=1e-4, atol=1e-6 * float(f.S.abs().max()))
        # eigenvectors really diagonalize the factors
        for C, Q in ((f.A, f.Q_A), (f.S, f.Q_S)):
            D = Q.T @ C @ Q
            off = (D - torch.diag(torch.diagonal(D))).abs().max() / D.abs().max()
            assert off < 1e-8
        lam = sum((f.Q_S.T @ G[kind] @ f.Q_A) ** 2 for G in lam_G) / len(lam_G)
        err = float((f.lam - lam).abs().max() / lam.abs().max())
        assert err < 1e-4, (kind, err)
        assert f.damping == pytest.approx(max(0.1 * float(lam.mean()), 1e-5), rel=1e-4)
        # batch-summed gradients (the authors' shortcut) would give a different Lambda
        summed = (f.Q_S.T @ sum(G[kind] for G in lam_G) @ f.Q_A) ** 2 / len(lam_G)
        assert float((summed - lam).abs().max() / lam.abs().max()) > 1e-2


def test_probe_data_matches_probes_module():
    model = tiny("neox", 0)
    mda = MDA(model, ["L1.H0.qk"], ["copy_target"], settings=Settings(probe_n=5, probe_seq_len=10, progress=False))
    torch.testing.assert_close(mda.probe_data["copy_target"], make_data(5, 10, 2, 256, 12345))


def test_identity_preconditioner_gives_plain_gradient_dot_products(tmp_path):
    """The LDS baseline attributor: -<grad L(z), grad f> with no curvature, against autograd."""
    model = tiny("neox", 2)
    src = window()
    mda = MDA(model, [f"L{LAYER}.H{HEAD}.qk"], [CopyTargetProbe()],
              settings=Settings(fit_fraction=0.5, batch_size=4, progress=False, probe_n=6, probe_seq_len=16,
                                preconditioner="identity"))
    table = mda.fit(src).score(src, str(tmp_path / "run"))
    model64 = copy.deepcopy(model).double()
    pg = probe_grads(model64, "neox", CopyTargetProbe(), mda.probe_data["copy_target"])["qk"]
    expected = np.array([-(row_grads(model64, "neox", torch.as_tensor(src.read([z])[0]))["qk"] * pg).sum().item()
                         for z in range(N_ROWS)])
    err = np.abs(table.scores[:, 0] - expected).max() / np.abs(expected).max()
    assert err <= 1e-4
    assert table.manifest["settings_score"]["preconditioner"] == "identity"
    with pytest.raises(Exception, match="preconditioner"):
        Settings(preconditioner="kfac")
