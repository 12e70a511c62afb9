"""Real-time augmentation as TF ops on a batch, inside the tf.data graph.

All randomness is stateless: a batch's augmentation is a pure function of
(seed, batch) so a run is reproducible and resumable. (XLA draws other
numbers than TF's own kernels for the same seed; the input pipeline always
runs this compiled.) Images are float32 in [0, 1], shape [N, H, W, C].

Names accepted in `config.augment` (comma-separated; parsed into an
`augment_math.AugmentSpec`):
  flip        horizontal flip with probability 1/2
  rotate      rotation by U(-rotation_degrees, rotation_degrees)
  zoom        scale by U(1 - zoom_range, 1 + zoom_range) about the centre
  shift       translation by U(-shift_fraction, shift_fraction) of each side
  brightness  add U(-brightness_delta, brightness_delta), clipped to [0, 1]
Flip, rotation, zoom and shift are one bilinear affine warp (edges
reflected), computed as TF's ImageProjectiveTransformV3 (BILINEAR, REFLECT)
does but written as gathers (`augment_math.py`), so that XLA compiles it
with the rest of the batch transform (input_pipeline.py): XLA's warp takes
about a fifth of the CPU time of TF's kernel, time the tf.data threads would
otherwise take from the train step running beside them (BENCHMARKS.md).
"""

import tensorflow as tf

from imgclf_jax import augment_math


def warp_bilinear(images, transforms):
  """augment_math.warp_bilinear in TF: float32 [N, H, W, C], [N, 6]."""
  return augment_math.warp_bilinear(augment_math.tf_ops(), images, transforms)


def affine_matrices(angles, scales, shifts, flips, height, width):
  """augment_math.affine_matrices in TF: the [N, 6] transforms of a flip,
  rotation, zoom and shift."""
  return augment_math.affine_matrices(augment_math.tf_ops(), angles, scales,
                                      shifts, flips, height, width)


def affine_transform(images, angles, scales, shifts, flips=None):
  """Flips (where `flips`), rotates, zooms and translates a float32 batch
  [N, H, W, C] as `affine_matrices` describes."""
  images = tf.convert_to_tensor(images, tf.float32)
  if flips is None:
    flips = tf.zeros(tf.shape(angles), tf.bool)
  return warp_bilinear(images, affine_matrices(
      angles, scales, shifts, flips, tf.shape(images)[1], tf.shape(images)[2]))


def augment_batch(images, seed, spec: augment_math.AugmentSpec, rows=None):
  """Applies the augmentations of `spec` to a batch.

  Plain TF ops, all of which XLA compiles: the input pipeline runs this inside
  its jit-compiled batch transform.

  Args:
    images: float32 [N, H, W, C] in [0, 1].
    seed: int32/int64 tensor of shape [2], the stateless seed of this batch.
    spec: which augmentations, and their sizes.
    rows: None, or (offset, total): `images` are rows offset..offset + N of
      a batch of `total` (one process's share of a global batch), and get
      the augmentation those rows get in the whole batch.
  """
  images = tf.convert_to_tensor(images, tf.float32)
  if not spec:
    return images
  seeds = tf.random.experimental.stateless_split(seed, num=augment_math.num_streams(spec))

  def uniform(stream, shape, low, high):
    if rows is None:
      return tf.random.stateless_uniform(shape, seeds[stream], low, high)
    offset, total = rows
    whole = tf.random.stateless_uniform([total, *shape[1:]], seeds[stream],
                                        low, high)
    return whole[offset:offset + shape[0]]

  return augment_math.augment(augment_math.tf_ops(), images, uniform, spec)
