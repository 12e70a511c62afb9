"""--mode=train: the config resolved and read into each area's spec
(config/specs.py), the workdir locked, then the run (training/train.py)."""

import functools
import os

import jax

from imgclf_jax.checkpoints import workdir_lock
from imgclf_jax.config import resolve
from imgclf_jax.config import specs
from imgclf_jax.data import imbalance
from imgclf_jax.data import sources
from imgclf_jax.modes import pretrained_init
from imgclf_jax.parallel import distributed
from imgclf_jax.training import train


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming from its latest checkpoint).

  Returns the last epoch's metrics record (also the last line of
  `<workdir>/metrics.jsonl`). Holds the workdir's training lock
  (workdir_lock.py) throughout: a second trainer there stops at once.
  """
  workdir = os.path.abspath(workdir)
  devices = jax.local_devices()  # with several processes, this one's
  # The global batch is split over every device of every process.
  config = resolve.for_training(config, jax.device_count())
  data = specs.data_spec(config)
  source = sources.make_source(data.source)
  imbalance.parse_class_weights(data.imbalance.class_weights,
                                source.info.class_names)
  distributed.check_shared_workdir(workdir)
  spec = specs.run_spec(config, source.info.num_classes)
  # With several processes the first holds the lock (and writes the files).
  lock = (workdir_lock.TrainLock(workdir) if distributed.is_primary() else
          workdir_lock.NotLocked())
  with lock:
    return train.run(spec, source, data, workdir, devices, lock,
                     functools.partial(resolve.check_resume, config),
                     _pretrained(config, source.info.num_classes))


def _pretrained(config, num_classes: int):
  """What gives a new run --config.init_from's weights (None without)."""
  if not config.init_from:
    return None
  return functools.partial(pretrained_init.initialize,
                           init_from=config.init_from, model=config.model,
                           num_classes=num_classes)
