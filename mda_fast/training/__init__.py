"""Training loop with Pythia's optimizer/schedule and Pythia-style checkpoints (demo + intervene).

Public API::

    OptimConfig, OptimConfig.pythia(size), lr_at, build_optimizer
    train(model, source, steps=(a, b), rows_per_step, optim, out_dir, save_steps, row_weights=None,
          callbacks=(), resume=True, seed=0, batch_transform=None, init_from=None, tokenizer=None)
    pythia_save_steps(total, every, log_max=512, extra=()), list_checkpoints, save_checkpoint,
    restore, read_state
"""

from mda_fast.training.checkpoints import (list_checkpoints, load_weights, pythia_save_steps, read_state,
                                           restore, save_checkpoint, step_dir)
from mda_fast.training.loop import TrainResult, train
from mda_fast.training.optim import PYTHIA_LR, OptimConfig, build_optimizer, lr_at

__all__ = ["OptimConfig", "PYTHIA_LR", "build_optimizer", "lr_at", "train", "TrainResult",
           "pythia_save_steps", "list_checkpoints", "save_checkpoint", "restore", "read_state",
           "load_weights", "step_dir"]
