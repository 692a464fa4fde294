"""Runs dreamerv3/train.py with NaN in every float of the training batches after the first.

  python tests/inject_nan_batches.py <train.py flags>

A fault injection for the non-finite guard (tests/test_reliability.py): the
first batch (the pretrain update) is clean, so the agent has one good update;
every later batch that the replay hands out has NaN in its float keys, so each
update has non-finite gradients and is skipped.
"""

import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embodied.replay import uniform  # noqa: E402

CLEAN_BATCHES = 1


def poisoned(dataset):
  def wrapper(self, batch_size):
    for index, batch in enumerate(dataset(self, batch_size)):
      if index >= CLEAN_BATCHES:
        for value in batch.values():
          if np.issubdtype(value.dtype, np.floating):
            value[...] = np.nan
      yield batch
  return wrapper


if __name__ == '__main__':
  uniform.Uniform.dataset = poisoned(uniform.Uniform.dataset)
  from dreamerv3 import train
  train.main(sys.argv[1:])
