"""Run loops: train, train_eval and eval_only (see docs/architecture.md)."""

from embodied.run.eval_only import eval_only
from embodied.run.train import train
from embodied.run.train_eval import train_eval
