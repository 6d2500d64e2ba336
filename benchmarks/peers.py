"""The peers of benchmarks/bench_peers.py on its workload, and the from-scratch check of both.

Workload (shared with bench_peers.py): unit L3.H1.qkvo for mda-fast; for the peers, layer 3's
attention modules (query_key_value, dense, with biases), the whole window, true Fisher (labels drawn
from the model; ``labels="data"``: the empirical Fisher, deterministic), damping 0.1 x mean
eigenvalue, one query = the copy_target probe set's mean f; scores [N] in mda-fast's sign (positive:
the row strengthens f). :func:`reference_ekfac` computes it from scratch in float64 with data labels.

Nothing is installed by the benchmark: a peer that does not import is skipped (`bash scripts/install_peers.sh`
adds kronfluence 1.0.1 keeping the installed torch: its torchvision requirement, never imported, would make
pip replace a CPU torch with a CUDA build). Bergson is not in that group: its wheel requires torchvision, torchaudio and
bitsandbytes, and pip would replace the CPU torch with a CUDA build to satisfy them; the workload
imports none of the three, so install it beside the environment instead, e.g.

    pip install --no-deps --target /tmp/bergson_site bergson==2.5.1 peft ml_dtypes jaxtyping
    pip install --no-deps --target /tmp/bergson_site wadler_lindig natsort petname simple-parsing docstring_parser
    PYTHONPATH=/tmp/bergson_site:$PWD python benchmarks/bench_peers.py ...

(its other requirements - accelerate, datasets, transformers, huggingface-hub, jinja2, scipy,
pyarrow - come from the environment; ml_dtypes is the one compiled wheel, built against numpy
only. ``bergson.hessians.pipeline`` and the CLI also import torchopt, which this run avoids by
driving the hessian, query and scoring steps through the Python API with the model object: no
shim, no stub.)
"""

from __future__ import annotations

import shutil
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

UNIT, LAYER, PROBE = "L3.H1.qkvo", 3, "copy_target"
PEERS = {"kronfluence": "bash scripts/install_peers.sh",  # run -> how to get it when it does not import
         "bergson": "install it beside the environment and set PYTHONPATH: see benchmarks/peers.py"}


def kronfluence_run(model, src, bs: int, probe_tokens: torch.Tensor, labels: str = "sampled",
                    precise: bool = False) -> np.ndarray:
    """kronfluence EK-FAC on layer LAYER's attention modules, whole window, damping 0.1 x mean
    eigenvalue (as mda-fast); scores [N] in mda-fast's sign. labels "data": empirical Fisher.
    precise: kronfluence's float32 covariances, per-sample gradients, Lambda, preconditioning and
    scores in float64 instead (its defaults, used for timing, are float32; eigh is float64 in both)."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    from mda_fast.probes import parse_probe, probe_forward

    probe = parse_probe(PROBE)
    mods = [f"gpt_neox.layers.{LAYER}.attention.query_key_value", f"gpt_neox.layers.{LAYER}.attention.dense"]

    class LMTask(Task):  # the row loss of mda-fast (summed CE; labels sampled for the true Fisher)
        def compute_train_loss(self, batch, model, sample=False):
            logits = model(input_ids=batch[:, :-1]).logits.float()
            flat = logits.reshape(-1, logits.shape[-1])
            if sample:
                with torch.no_grad():
                    labels = torch.multinomial(torch.softmax(flat.detach(), -1), 1).squeeze(-1)
            else:
                labels = batch[:, 1:].reshape(-1)
            return F.cross_entropy(flat, labels, reduction="sum")

        def compute_measurement(self, batch, model):  # batch: probe rows [q, T]; kronfluence takes
            return probe_forward(model, probe, batch)  # each row as one query (see the summed scores)

        def get_influence_tracked_modules(self):
            return mods

    rows = [torch.as_tensor(r) for r in src.read(np.arange(len(src)))]
    task = LMTask()
    model = prepare_model(model, task)
    out = tempfile.mkdtemp(prefix="kf_peers_")
    try:
        an = Analyzer("bench", model=model, task=task, cpu=True, disable_tqdm=True, output_dir=out)
        f64 = dict.fromkeys(("activation_covariance_dtype", "gradient_covariance_dtype", "per_sample_gradient_dtype",
                             "lambda_dtype"), torch.float64) if precise else {}
        fargs = FactorArguments(strategy="ekfac", covariance_max_examples=None, lambda_max_examples=None,
                                use_empirical_fisher=labels == "data", **f64)
        sargs = ScoreArguments(damping_factor=None, **(dict.fromkeys(
            ("per_sample_gradient_dtype", "precondition_dtype", "score_dtype"), torch.float64) if precise else {}))
        an.fit_all_factors("ekfac", dataset=rows, per_device_batch_size=bs, factor_args=fargs, overwrite_output_dir=True)
        queries = list(probe_tokens)  # one query per probe row: kronfluence splits per-sample gradients
        # along the model's batch dimension, so a whole [32, 64] probe batch as one query would count
        # only its first row; the influence on the mean f over rows is the mean of the row scores
        an.compute_pairwise_scores("s", factors_name="ekfac", query_dataset=queries, train_dataset=rows,
                                   per_device_query_batch_size=len(queries), per_device_train_batch_size=bs,
                                   score_args=sargs, overwrite_output_dir=True)
        # kronfluence scores grad f^T H^-1 grad L (positive: up-weighting the row lowers f); mda-fast's
        # sign is the opposite (positive: the row strengthens f), so negate to compare
        return -an.load_pairwise_scores("s")["all_modules"].double().mean(0).numpy()  # f: the probe's mean
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _bergson_query_rows(probe_tokens: torch.Tensor):
    """copy_target's probe rows [n, T] as a Bergson query dataset: input t's logit is scored against
    label t + 1 (-100: not scored); Bergson drops the last logit, so each row gets one pad token to
    keep its last position's target."""
    from datasets import Dataset

    from mda_fast.probes import parse_probe

    tgt, valid = parse_probe(PROBE).targets(probe_tokens)
    n, T = probe_tokens.shape
    ids = torch.cat([probe_tokens, probe_tokens.new_zeros(n, 1)], 1)
    targets = torch.full_like(ids, -100)
    targets[:, 1:] = torch.where(valid, tgt, torch.full_like(tgt, -100))
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": targets.tolist(), "length": [T + 1] * n})


def bergson_run(model, src, bs: int, probe_tokens: torch.Tensor, labels: str = "sampled") -> np.ndarray:
    """Bergson EK-FAC on layer LAYER's attention modules (query_key_value, dense, with biases, as
    kronfluence tracks them), whole window, true Fisher (sampled labels; "data": empirical Fisher),
    damping 0.1 x mean eigenvalue; one query = the probe set; scores [N] in mda-fast's sign.

    Driven through Bergson's Python API with the model object (no hub, no CLI): the body of
    ``bergson.hessians.hessian_approximations.hessian_worker`` (``fit_factored_hessians``: KFAC
    covariances, eigendecomposition, eigenvalue-correction pass) minus its model/data loading and
    process launch, then an ``InMemoryCollector`` for the query (its Builder applies the inverse
    EK-FAC and means the probe rows) and one for the training rows with an on-the-fly ``Scorer``.
    copy_target is f = sum of log p(induction target), i.e. minus a CE with those targets as labels,
    so the query is Bergson's own CE query gradient on the probe rows labelled with the targets.
    """
    from datasets import Dataset

    from bergson.collector.collector import CollectorComputer
    from bergson.collector.in_memory_collector import InMemoryCollector
    from bergson.config import HessianConfig, IndexConfig, InversionConfig, PreprocessConfig
    from bergson.gradients import GradientProcessor
    from bergson.hessians.hessian_approximations import fit_factored_hessians
    from bergson.score.score_writer import InMemorySequenceScoreWriter
    from bergson.score.scorer import Scorer

    mods = {f"layers.{LAYER}.attention.query_key_value", f"layers.{LAYER}.attention.dense"}  # in model.base_model
    rows = src.read(np.arange(len(src)))
    train = Dataset.from_dict({"input_ids": rows.tolist(), "length": [rows.shape[1]] * len(rows)})
    batches = [list(range(i, min(i + bs, len(rows)))) for i in range(0, len(rows), bs)]
    query, n = _bergson_query_rows(probe_tokens), probe_tokens.shape[0]

    # what bergson's setup_model_and_peft does after loading: no weight .grad, hooks see every gradient
    model.requires_grad_(False)
    model.get_input_embeddings().requires_grad_(True)
    out = tempfile.mkdtemp(prefix="bergson_peers_")
    try:
        def cfg(name: str) -> IndexConfig:  # summed CE per row, no projection, biases as kronfluence
            c = IndexConfig(run_path=f"{out}/{name}", loss_fn="ce", loss_reduction="sum", projection_dim=0,
                            include_bias=True)
            c.partial_run_path.mkdir(parents=True)
            return c

        def collect(data, c, batches, desc, **kw):
            col = InMemoryCollector(model=model.base_model, data=data, cfg=c, target_modules=mods,
                                    processor=GradientProcessor(include_bias=True), **kw)
            CollectorComputer(model, data, collector=col, batches=batches, cfg=c).run_with_collector_hooks(desc)
            return col

        hcfg = cfg("hessian")
        hess = str(hcfg.partial_run_path)
        fit_factored_hessians(model, train, hcfg,
                              HessianConfig(method="kfac", ev_correction=True, use_dataset_labels=labels == "data"),
                              target_modules=mods, attention_cfgs={}, batches=batches, path=hess,
                              do_eigendecomposition=True)
        pre = PreprocessConfig(hessian_path=hess, ev_correction=True, aggregation="mean",
                               inversion_cfg=InversionConfig(inversion="damped_inverse", damping_factor=0.1))
        q = collect(query, cfg("query"), [list(range(n))], "query", preprocess_cfg=pre).gradients  # {module: [1, dim]}
        scorer = Scorer(q, sorted(q), InMemorySequenceScoreWriter(len(rows), 1), torch.device("cpu"), torch.float32)
        scores = collect(train, cfg("scores"), batches, "scores", scorer=scorer).scores
        # score = (H^-1 grad CE_probe) . grad CE_row = -grad f^T H^-1 grad L: mda-fast's sign already
        return scores[:, 0].double().numpy()
    finally:
        shutil.rmtree(out, ignore_errors=True)


def reference_ekfac(model, src, probe_tokens: torch.Tensor) -> np.ndarray:
    """The peers' workload from scratch in float64 with data labels (empirical Fisher), the check of
    both peers: per module [W | b] of layer LAYER's attention, Q_A, Q_G = eigenvectors of the sums of
    a^T a and g^T g over the rows' positions, lambda = mean over rows of (Q_G^T grad_n Q_A)^2,
    damping 0.1 x mean lambda, query = grad of the probe set's mean f; scores [N] in mda-fast's sign."""
    from mda_fast.probes import parse_probe, probe_forward

    att = model.gpt_neox.layers[LAYER].attention
    mods = (att.query_key_value, att.dense)
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o: seen.__setitem__((m, "a"), i[0].detach())) for m in mods]
    hooks += [m.register_full_backward_hook(lambda m, gi, go: seen.__setitem__((m, "g"), go[0].detach())) for m in mods]
    try:
        per_row = {m: [] for m in mods}  # (a [T, I+1], g [T, O]) of each row's summed CE
        for r in torch.as_tensor(src.read(np.arange(len(src)))):
            logits = model(input_ids=r[None, :-1]).logits
            F.cross_entropy(logits[0], r[1:], reduction="sum").backward()
            for m in mods:
                a = seen[m, "a"][0].double()
                per_row[m].append((torch.cat([a, a.new_ones(len(a), 1)], 1), seen[m, "g"][0].double()))
        f = probe_forward(model, parse_probe(PROBE), probe_tokens) / len(probe_tokens)
        qs = torch.autograd.grad(f, [p for m in mods for p in (m.weight, m.bias)])
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
    scores = np.zeros(len(src))
    for k, m in enumerate(mods):
        q = torch.cat([qs[2 * k], qs[2 * k + 1][:, None]], 1).double()
        qa = torch.linalg.eigh(sum(a.T @ a for a, _ in per_row[m]))[1]
        qg = torch.linalg.eigh(sum(g.T @ g for _, g in per_row[m]))[1]
        grads = [g.T @ a for a, g in per_row[m]]
        lam = sum((qg.T @ x @ qa) ** 2 for x in grads) / len(grads)
        hq = qg @ ((qg.T @ q @ qa) / (lam + 0.1 * lam.mean())) @ qa.T
        scores -= np.array([float((hq * x).sum()) for x in grads])
    return scores
