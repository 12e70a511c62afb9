"""Everything done to a batch after it is drawn: uint8 -> [0, 1] floats,
augmentation (training), normalisation, one-hot labels and loss weights, as
one tf.function compiled by XLA (jit_compile=True): about half the CPU time
of TF's kernels op by op, which matters because tf.data shares the CPU with
the train step (BENCHMARKS.md). The pipeline builds each once, so every
epoch's tf.data graph reuses its compilation."""

import tensorflow as tf

from imgclf_jax.data import augment
from imgclf_jax.data import preprocess


def model_input(images, labels, normalization: dict, num_classes: int
                ) -> dict:
  """[0, 1] float images and int labels -> normalised images and one-hot
  labels."""
  return {'image': preprocess.normalize(images, normalization),
          'label': tf.one_hot(labels, num_classes)}


def train_transform(spec: augment.AugmentSpec, normalization: dict,
                    num_classes: int, weights=None, minority_augment=None,
                    rows=None):
  """(batch index, uint8 images, labels, epoch seed) -> a training batch.

  `weights`: float32 [K] loss weight per class, or None (no 'weight');
  `minority_augment`: imbalance.minority_augment_fn's, or None; `rows`:
  None, or (offset, total): the images are those rows of a global batch of
  `total` (augment.augment_batch).
  """
  weights = None if weights is None else tf.constant(weights, tf.float32)

  def transform(index, images, labels, seed):
    images = preprocess.to_unit_float(images)
    batch_seed = tf.random.experimental.stateless_fold_in(seed, index)
    augmented = augment.augment_batch(images, batch_seed, spec, rows)
    if minority_augment is not None:
      augmented = minority_augment(images, augmented, labels, batch_seed,
                                   rows)
    out = model_input(augmented, labels, normalization, num_classes)
    if weights is not None:
      out['weight'] = tf.gather(weights, labels)
    return out

  return tf.function(transform, jit_compile=True)


def eval_transform(normalization: dict, num_classes: int):
  """(uint8 images, labels) -> an evaluation batch."""

  def transform(images, labels):
    return model_input(preprocess.to_unit_float(images), labels,
                       normalization, num_classes)

  return tf.function(transform, jit_compile=True)
