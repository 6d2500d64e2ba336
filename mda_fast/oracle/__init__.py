"""The exact oracle: metagradients d target(theta_T) / d w_i of every row's loss weight through the
real training updates of a window (REPLAY/MAGIC-style reverse sweep over replayed optimizer steps).

    from mda_fast.oracle import exact_metagradient, InductionScore
    mg = exact_metagradient(model, source, (a, b), rows_per_step, optim, InductionScore(1, 2, probe_tokens),
                            init_from="run/checkpoints/step{a}", out_dir="run/exact")
    mg.row_ids, mg.weight_grad            # int64 [N], float64 [N]: d target / d w_i at w = 1

Modules: train_state (snapshots + forward replay through training.loop's update), step_vjp (one
update as a differentiable function and its VJP), metagradient (the sweep), sweep_store (resumable,
atomic outputs), targets (induction score, probes), run_exact (the `mda exact` handler logic).
Layer: above training, heads and probes; below intervene, demo and cli.
"""

from mda_fast.oracle.metagradient import MetaGradient, exact_metagradient
from mda_fast.oracle.step_vjp import Adjoint, step_vjp
from mda_fast.oracle.targets import InductionScore, ProbeTarget
from mda_fast.oracle.train_state import Replayer, TrainState

__all__ = ["exact_metagradient", "MetaGradient", "InductionScore", "ProbeTarget", "Adjoint", "step_vjp",
           "Replayer", "TrainState"]
