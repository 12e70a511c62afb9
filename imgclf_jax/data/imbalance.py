"""Class imbalance: how large it is, and the three remedies of the config.

  class_weights     weight of each example's loss term by its class:
                    'none', 'balanced' (inverse frequency, n / (K * n_c), so a
                    class-balanced epoch would have mean weight 1), or explicit
                    weights ('1,1,4' one per class, or 'cat=4,dog=2', others 1)
  oversample        draw training examples so that every class is seen about
                    equally often: one shuffled, repeated stream per class,
                    mixed with equal probabilities (tf.data, streaming; no copy
                    of the dataset is made). An epoch keeps its length.
  minority_augment  a stronger augmentation (the names listed, sizes times
                    minority_augment_scale) for examples of minority classes
                    only: classes with fewer than minority_fraction times the
                    largest class's training examples.
"""

import math

from absl import logging
import numpy as np
import tensorflow as tf

from imgclf_jax.data import augment
from imgclf_jax.data import spec as spec_lib
from imgclf_jax.errors import UserError

NO_WEIGHTS = ('', 'none')


def class_counts(labels, num_classes: int) -> np.ndarray:
  return np.bincount(np.asarray(labels, np.int64),
                     minlength=num_classes).astype(np.int64)


def imbalance_ratio(counts) -> float:
  """Examples of the largest class over those of the smallest (inf if empty)."""
  counts = np.asarray(counts)
  if counts.min() == 0:
    return math.inf
  return float(counts.max() / counts.min())


def minority_classes(counts, fraction: float) -> np.ndarray:
  """Boolean mask of the classes with < fraction * (largest class) examples."""
  counts = np.asarray(counts, np.float64)
  return counts < fraction * counts.max()


# ----------------------------------------------------------------------------
# Class weighting


def parse_class_weights(spec, class_names=None):
  """config.class_weights (ImbalanceSpec.class_weights) -> None, 'balanced',
  or float weights per class.

  Without `class_names` only the syntax is checked (and explicit weights come
  back as {class name or index: weight}).
  """
  text = str(spec if spec is not None else '').strip()
  if text.lower() in NO_WEIGHTS:
    return None
  if text.lower() == 'balanced':
    return 'balanced'
  how = ("use 'none', 'balanced', one number per class in class order "
         "('1,1,4') or class=weight pairs, others 1 ('cat=4,dog=2')")
  parts = [p.strip() for p in text.split(',')]
  try:
    if all('=' in p for p in parts):
      pairs = [tuple(x.strip() for x in p.split('=', 1)) for p in parts]
      given = {name: float(value) for name, value in pairs if name}
      if len(given) != len(parts):
        raise ValueError('empty or repeated class name')
    elif any('=' in p for p in parts):
      raise ValueError('mixed forms')
    else:
      given = {i: float(p) for i, p in enumerate(parts)}
  except ValueError:
    raise UserError(f'--config.class_weights={spec!r} is invalid: {how}.'
                    ) from None
  values = np.array(list(given.values()))
  if not np.all(np.isfinite(values)) or np.any(values < 0):
    raise UserError(f'--config.class_weights={spec!r}: weights must be finite '
                    'and >= 0.')
  if class_names is None:
    return given
  names = list(class_names)
  if all(isinstance(k, int) for k in given):
    if len(given) != len(names):
      raise UserError(f'--config.class_weights={spec!r} gives {len(given)} '
                      f'weights for the {len(names)} classes {names}: give '
                      'one per class, in this order, or class=weight pairs.')
    weights = values
  else:
    unknown = [k for k in given if k not in names]
    if unknown:
      raise UserError(f'--config.class_weights={spec!r}: {unknown} not among '
                      f'the classes {names}; {how}.')
    weights = np.array([given.get(n, 1.0) for n in names])
  if not np.any(weights > 0):
    raise UserError(f'--config.class_weights={spec!r}: every weight is 0; '
                    'give at least one class a weight > 0.')
  return weights


def loss_weights(spec, counts, class_names):
  """Per-class loss weights for class_weights `spec`, or None (no weighting).

  'balanced' gives n / (K * n_c): the total weight of every class is the
  same, and it is 0 for a class with no training examples.
  """
  parsed = parse_class_weights(spec, class_names)
  if parsed is None:
    return None
  if isinstance(parsed, str):  # 'balanced'
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)
  return parsed.astype(np.float32)


# ----------------------------------------------------------------------------
# Oversampling


def oversample(class_examples, counts, num_examples: int, seed: int,
               shuffle_buffer_size: int) -> tf.data.Dataset:
  """`num_examples` (image, label) pairs in which every class is equally likely.

  `class_examples`: one dataset per class with examples (in class order,
  skipping classes whose count is 0), as Examples.class_examples gives.
  Each stream is shuffled afresh on every pass and repeated, and a seeded
  random choice of stream is made per example: minority examples repeat
  within an epoch, majority ones are not all seen. Memory is the shuffle buffers only; the order is fixed by `seed`.
  """
  counts = np.asarray(counts)
  present = [int(c) for c in np.flatnonzero(counts > 0)]
  if len(class_examples) != len(present):
    raise ValueError(f'{len(class_examples)} class streams for the '
                     f'{len(present)} classes present')
  seeds = np.random.SeedSequence([seed, 1]).generate_state(len(present) + 1)
  streams = []
  for c, stream, stream_seed in zip(present, class_examples, seeds):
    stream = stream.shuffle(int(min(shuffle_buffer_size, counts[c])),
                            seed=int(stream_seed),
                            reshuffle_each_iteration=True).repeat()
    streams.append(stream)
  mixed = tf.data.Dataset.sample_from_datasets(
      streams, weights=[1.0 / len(streams)] * len(streams),
      seed=int(seeds[-1]))
  return mixed.take(num_examples)


# ----------------------------------------------------------------------------
# Minority augmentation


def minority_augment_fn(spec: augment.AugmentSpec, minority_mask):
  """fn(images [N,H,W,C] in [0,1], augmented, labels [N], seed, rows=None)
  or None
  (no augmentation in `spec`, or no minority class).

  Returns the batch with minority-class examples replaced by the `spec`
  augmentation of their un-augmented image; other examples keep `augmented`.
  """
  if not spec or not np.any(minority_mask):
    return None
  mask = tf.constant(np.asarray(minority_mask, bool))

  def apply(images, augmented, labels, seed, rows=None):
    strong = augment.augment_batch(
        images, tf.random.experimental.stateless_fold_in(seed, 1), spec, rows)
    minority = tf.gather(mask, labels)
    return tf.where(minority[:, None, None, None], strong, augmented)

  return apply


# ----------------------------------------------------------------------------
# Reporting


def describe(counts, class_names, spec: spec_lib.ImbalanceSpec) -> dict:
  """Counts, ratio and minority classes of the training split, and a warning."""
  counts = np.asarray(counts)
  ratio = imbalance_ratio(counts)
  minority = minority_classes(counts, spec.minority_fraction)
  names = [class_names[i] for i in np.flatnonzero(minority)]
  summary = {'imbalance_ratio': ratio if math.isfinite(ratio) else None,
             'minority_classes': names}
  if ratio > spec.warning_ratio:
    remedies = [r for r, on in (
        ('--config.class_weights=balanced',
         parse_class_weights(spec.class_weights, class_names) is None),
        ('--config.oversample=True', not spec.oversample),
        ('--config.minority_augment=flip,rotate,zoom,shift,brightness',
         not spec.minority_augment)) if on]
    largest = class_names[int(np.argmax(counts))]
    smallest = class_names[int(np.argmin(counts))]
    logging.warning(
        'Class imbalance: the training split has %d %s images but only %d %s '
        '(ratio %.1f > imbalance_warning_ratio %.1f); minority classes: %s.%s',
        counts.max(), largest, counts.min(), smallest, ratio,
        spec.warning_ratio, ', '.join(names) or 'none',
        f' Remedies: {", ".join(remedies)}.' if remedies else '')
    summary['warning'] = True
  else:
    summary['warning'] = False
  return summary
