"""Real-time augmentation as TF ops on a batch, inside the tf.data graph.

All randomness is stateless: a batch's augmentation is a pure function of
(seed, batch) so a run is reproducible and resumable. Images are float32 in
[0, 1], shape [N, H, W, C].

Names accepted in `config.augment` (comma-separated):
  flip        horizontal flip with probability 1/2
  rotate      rotation by U(-rotation_degrees, rotation_degrees)
  zoom        scale by U(1 - zoom_range, 1 + zoom_range) about the centre
  shift       translation by U(-shift_fraction, shift_fraction) of each side
  brightness  add U(-brightness_delta, brightness_delta), clipped to [0, 1]
Rotation, zoom and shift are one bilinear affine warp (edges reflected).
"""

import math

import tensorflow as tf

from imgclf_jax.errors import UserError

AUGMENTATIONS = ('flip', 'rotate', 'zoom', 'shift', 'brightness')


def parse_augment(spec: str, key: str = 'augment') -> tuple[str, ...]:
  """'flip, shift' -> ('flip', 'shift'); raises UserError on unknown names."""
  names = tuple(n.strip() for n in (spec or '').split(',') if n.strip())
  unknown = [n for n in names if n not in AUGMENTATIONS]
  if unknown:
    raise UserError(
        f'--config.{key}={spec!r}: unknown augmentation(s) {unknown}; '
        f'choose a comma-separated subset of {",".join(AUGMENTATIONS)}.')
  return names


def affine_transform(images, angles, scales, shifts):
  """Rotates by `angles` (radians), zooms by `scales`, then translates.

  A content point p moves to  c + scale * R(angle) (p - c) + shift,  with c the
  image centre, shift = (dx, dy) in pixels (+x right, +y down), and R the
  rotation matrix in pixel coordinates (y down), so a positive angle turns
  the content clockwise on screen. Per-image parameters: [N], [N], [N, 2].
  """
  images = tf.convert_to_tensor(images)
  height = tf.cast(tf.shape(images)[1], tf.float32)
  width = tf.cast(tf.shape(images)[2], tf.float32)
  cx, cy = (width - 1) / 2, (height - 1) / 2
  # The op maps each output pixel (x, y) back to its input point, so invert:
  # p_in = R(-angle) (p_out - c - shift) / scale + c.
  cos = tf.cos(angles) / scales
  sin = tf.sin(angles) / scales
  ox, oy = cx + shifts[:, 0], cy + shifts[:, 1]
  a0, a1 = cos, sin
  b0, b1 = -sin, cos
  a2 = cx - a0 * ox - a1 * oy
  b2 = cy - b0 * ox - b1 * oy
  zeros = tf.zeros_like(a0)
  transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=transforms,
      output_shape=tf.shape(images)[1:3], fill_value=0.0,
      interpolation='BILINEAR', fill_mode='REFLECT')


def augment_batch(images, seed, config, names=None):
  """Applies the augmentations named in config.augment to a batch.

  Args:
    images: float32 [N, H, W, C] in [0, 1].
    seed: int32/int64 tensor of shape [2], the stateless seed of this batch.
    config: the ConfigDict (augment names and sizes).
    names: the parsed `config.augment` (parsed here when None).
  """
  names = parse_augment(config.augment) if names is None else names
  images = tf.convert_to_tensor(images)
  if not names:
    return images
  n = tf.shape(images)[0]
  seeds = tf.random.experimental.stateless_split(seed, num=5)

  def uniform(i, shape, bound):
    return tf.random.stateless_uniform(shape, seeds[i], -bound, bound)

  if 'flip' in names:
    flip = tf.random.stateless_uniform([n], seeds[0]) < 0.5
    images = tf.where(flip[:, None, None, None],
                      tf.reverse(images, axis=[2]), images)
  if {'rotate', 'zoom', 'shift'} & set(names):
    angles = (uniform(1, [n], math.radians(config.rotation_degrees))
              if 'rotate' in names else tf.zeros([n]))
    scales = (1.0 + uniform(2, [n], config.zoom_range)
              if 'zoom' in names else tf.ones([n]))
    size = tf.cast(tf.shape(images)[2:0:-1], tf.float32)  # (width, height)
    shifts = (uniform(3, [n, 2], config.shift_fraction) * size
              if 'shift' in names else tf.zeros([n, 2]))
    images = affine_transform(images, angles, scales, shifts)
  if 'brightness' in names:
    delta = uniform(4, [n, 1, 1, 1], config.brightness_delta)
    images = tf.clip_by_value(images + delta, 0.0, 1.0)
  return images
