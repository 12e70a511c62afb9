"""Where an epoch's time beyond steps x step time goes (BENCHMARKS.md).

    python -m benchmarks.epoch_breakdown [--dataset folder:/path]

Prints, on the CIFAR-10 JPEG folder by default:
  1. the input pipeline's CPU time per batch of 128 (process CPU time while
     iterating a cache-warm epoch, no train step running), with every
     augmentation and with none;
  2. one epoch of the trainer's pmapped step in a bare loop (metrics through
     metrics.Accumulator) fed three ways: one device batch reused (compute
     only), host numpy batches from a list (through device_axis.to_devices,
     as the trainer's), and the tf.data pipeline (the real thing), twice
     each.
"""

import argparse
import os
import resource
import sys
import time

if __package__ in (None, ''):  # python benchmarks/epoch_breakdown.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax

from benchmarks import common
from imgclf_jax.config import specs
from imgclf_jax.data import input_pipeline
from imgclf_jax.data import sources
from imgclf_jax.models import registry
from imgclf_jax.parallel import device_axis
from imgclf_jax.training import metrics as metrics_lib
from imgclf_jax.training import train_state as train_state_lib


def cpu_seconds():
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def pipeline_cpu_ms(dataset, augment):
  config = common.make_config(128, dataset=dataset, augment=augment)
  data = specs.data_spec(config)
  pipeline = input_pipeline.InputPipeline(sources.make_source(data.source),
                                          data)
  for _ in pipeline.train_batches(0):  # fills the cache
    pass
  start, batches = cpu_seconds(), 0
  for _ in pipeline.train_batches(1):
    batches += 1
  return 1000 * (cpu_seconds() - start) / batches


def bare_loop_epochs(dataset):
  config = common.make_config(128, dataset=dataset)
  data = specs.data_spec(config)
  pipeline = input_pipeline.InputPipeline(sources.make_source(data.source),
                                          data)
  state = train_state_lib.create_train_state(
      jax.random.key(0), registry.create_model(specs.model_spec(config, pipeline.source.info.num_classes)),
      pipeline.image_shape, specs.optim_spec(config), pipeline.steps_per_epoch)
  p_step = common.trainer_train_step(config)
  rng = jax.random.key(1)
  host = list(pipeline.train_batches(0))
  device = next(device_axis.to_devices(iter(host[:1])))

  def epoch(batches):
    nonlocal state
    total, start = metrics_lib.Accumulator(), time.perf_counter()
    for batch in batches:
      state, metrics = p_step(state, batch, rng)
      total.add(metrics)
    metrics_lib.to_floats(total.result(), '')
    return time.perf_counter() - start

  epoch([device] * 20)  # compile and warm up
  for repeat in range(2):
    for name, batches in (
        ('one device batch reused', lambda: [device] * len(host)),
        ('host batches from a list', lambda: device_axis.to_devices(host)),
        ('tf.data pipeline', lambda r=repeat: device_axis.to_devices(
            pipeline.train_batches(r + 1)))):
      print(f'  epoch, {name}: {epoch(batches()):.2f} s', flush=True)


def main():
  common.tune_malloc()  # before JAX allocates, as main.py does
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--dataset', default=f'folder:{common.SHARED_CIFAR}')
  args = parser.parse_args()
  for augment in ('flip,rotate,zoom,shift,brightness', ''):
    print(f'pipeline CPU time per batch, augment={augment!r}: '
          f'{pipeline_cpu_ms(args.dataset, augment):.1f} ms', flush=True)
  bare_loop_epochs(args.dataset)


if __name__ == '__main__':
  main()
