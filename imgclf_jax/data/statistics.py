"""The normalisation statistics: per-channel mean/std in [0, 1] pixel units,
of the training split's resized images (all of them, or a fixed sample of a
larger split: Source.sample_indices), or as given, or 'unit' (0 and 1).

A resumed run, eval and predict keep their checkpoint's statistics
(`warn_if_differ` says so where the config gives others)."""

import time

from absl import logging
import numpy as np
import tensorflow as tf

from imgclf_jax.data import examples as examples_lib
from imgclf_jax.data import iterate
from imgclf_jax.data import spec as spec_lib
from imgclf_jax.errors import UserError


def normalization(spec: spec_lib.StatisticsSpec,
                  examples: examples_lib.Examples) -> dict:
  """{'mean': [C], 'std': [C]}: 'unit', the given ones, or measured on the
  training split's resized examples (as evaluation sees them), or on the
  sample Source.sample_indices draws of it where it holds more than
  spec.sample_size images."""
  source, channels = examples.source, examples.image_shape[-1]
  if spec.normalization == 'unit':
    return {'mean': [0.0] * channels, 'std': [1.0] * channels}
  if spec.mean:
    for key, given in (('normalization_mean', spec.mean),
                       ('normalization_std', spec.std)):
      if len(given) != channels:
        raise UserError(
            f'--config.{key}={tuple(given)!r} has {len(given)} number(s), '
            f'but {source.info.name!r} has {channels} channel(s): give one '
            'number per channel.')
    logging.info('Normalisation statistics as given: mean %s, std %s.',
                 list(spec.mean), list(spec.std))
    return {'mean': [float(v) for v in spec.mean],
            'std': [float(v) for v in spec.std]}
  n = source.num_examples('train')
  started = time.time()
  if n <= spec.sample_size:
    images, measured = examples.resized('train'), f'all {n:,}'
  else:
    indices = source.sample_indices('train', spec.sample_size)
    images = examples.from_source('train', indices)
    measured = (f'{len(indices):,} of the {n:,} (a fixed sample, '
                '--config.normalization_sample_size)')
  stats = measure(images, channels, source)
  logging.info('Normalisation statistics of %s training images in %.1f s: '
               'mean %s, std %s.', measured, time.time() - started,
               np.round(stats['mean'], 4).tolist(),
               np.round(stats['std'], 4).tolist())
  return stats


def measure(images: tf.data.Dataset, channels: int, source) -> dict:
  """Per-channel mean/std of (uint8 image, label) pairs of `source`'s
  training split, in [0, 1] units."""
  ds = iterate.finish(images.batch(1024).map(
      lambda image, label: tf.cast(image, tf.float64) / 255.0))
  total = np.zeros(channels)
  total_sq = np.zeros(channels)
  count = 0
  for batch in iterate.as_numpy(ds, source, 'train'):
    total += batch.sum(axis=(0, 1, 2))
    total_sq += (batch ** 2).sum(axis=(0, 1, 2))
    count += batch.shape[0] * batch.shape[1] * batch.shape[2]
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-12))
  return {'mean': mean.tolist(), 'std': std.tolist()}


def warn_if_differ(spec: spec_lib.StatisticsSpec, normalization: dict):
  """A resumed run (or eval) keeps its checkpoint's statistics: say so where
  the spec gives others."""
  if not spec.mean:
    return
  mine = {'mean': [float(v) for v in spec.mean],
          'std': [float(v) for v in spec.std]}
  if mine != {k: [float(v) for v in normalization[k]] for k in mine}:
    logging.warning(
        'Using the checkpoint\'s normalisation statistics (mean %s, std %s), '
        'not --config.normalization_mean=%s / normalization_std=%s: the '
        'statistics of a run are fixed when it starts.', normalization['mean'],
        normalization['std'], tuple(spec.mean), tuple(spec.std))
