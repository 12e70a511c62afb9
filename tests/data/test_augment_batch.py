"""augment.augment_batch: augmentation as TF ops in the tf.data graph: each
warp moves content as it should, a function of the seed, and warp_bilinear
with tf_ops is TF's own kernel."""

import math

import numpy as np
import pytest
import tensorflow as tf

from imgclf_jax.data import augment
from tests.helpers import augment_spec as _config


SEED = tf.constant([1, 2], tf.int64)


def _warp(images, transforms):
  return augment.warp_bilinear(augment.tf_ops(), images, transforms)


def _affine_matrices(angles, scales, shifts, flips, height, width):
  return augment.affine_matrices(augment.tf_ops(), angles, scales, shifts,
                                 flips, height, width)


def _affine_transform(images, angles, scales, shifts, flips=None):
  """Flips (where `flips`), rotates, zooms and translates a float32 batch."""
  images = tf.convert_to_tensor(images, tf.float32)
  if flips is None:
    flips = tf.zeros(tf.shape(angles), tf.bool)
  return _warp(images, _affine_matrices(
      angles, scales, shifts, flips, tf.shape(images)[1], tf.shape(images)[2]))


def _dot_image(x, y, size=21):
  image = np.zeros((1, size, size, 1), np.float32)
  image[0, y, x, 0] = 1.0
  return image


def _brightest(image):
  y, x = np.unravel_index(np.argmax(image[0, :, :, 0]), image.shape[1:3])
  return int(x), int(y)


def test_flip_is_a_mirror_image():
  images = np.random.default_rng(0).random((64, 6, 5, 3)).astype(np.float32)
  out = augment.augment_batch(images, SEED, _config('flip')).numpy()
  flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
  kept = [np.array_equal(o, i) for o, i in zip(out, images)]
  assert all(f or k for f, k in zip(flipped, kept))
  assert 16 < sum(flipped) < 48  # about half of them


def test_brightness_moves_the_mean_and_stays_in_range():
  images = np.full((32, 8, 8, 3), 0.5, np.float32)
  config = _config('brightness', brightness_delta=0.2)
  out = augment.augment_batch(images, SEED, config).numpy()
  shifts = out.mean(axis=(1, 2, 3)) - 0.5
  assert np.all(np.abs(shifts) <= 0.2 + 1e-6)
  assert np.std(shifts) > 0.05          # images moved by different amounts
  for o, s in zip(out, shifts):         # a uniform shift per image
    np.testing.assert_allclose(o, 0.5 + s, atol=1e-6)
  bright = augment.augment_batch(np.ones_like(images), SEED, config).numpy()
  assert bright.max() <= 1.0 and bright.min() >= 0.8 - 1e-6


def test_shift_moves_content_by_the_shift():
  image = _dot_image(10, 10)
  out = _affine_transform(image, tf.zeros([1]), tf.ones([1]),
                                 tf.constant([[3.0, -2.0]])).numpy()
  assert out.shape == image.shape
  assert _brightest(out) == (13, 8)


def test_rotation_turns_content_about_the_centre():
  image = _dot_image(15, 10)  # 5 px right of the centre (10, 10)
  out = _affine_transform(image, tf.constant([math.pi / 2]),
                                 tf.ones([1]), tf.zeros([1, 2])).numpy()
  assert out.shape == image.shape
  assert _brightest(out) == (10, 15)  # now 5 px below the centre


def test_zoom_scales_distances_from_the_centre():
  image = _dot_image(14, 10)  # 4 px right of the centre
  out = _affine_transform(image, tf.zeros([1]), tf.constant([1.5]),
                                 tf.zeros([1, 2])).numpy()
  assert _brightest(out) == (16, 10)  # 6 px right of the centre


@pytest.mark.parametrize('name', ['rotate', 'zoom', 'shift'])
def test_random_warps_keep_shape_and_change_content(name):
  images = np.random.default_rng(1).random((8, 12, 12, 3)).astype(np.float32)
  out = augment.augment_batch(images, SEED, _config(name)).numpy()
  assert out.shape == images.shape
  assert out.min() >= 0.0 and out.max() <= 1.0
  changed = [not np.allclose(o, i, atol=1e-3) for o, i in zip(out, images)]
  assert sum(changed) >= 6


def test_augmentation_is_a_function_of_the_seed():
  images = np.random.default_rng(2).random((8, 12, 12, 3)).astype(np.float32)
  config = _config('flip,rotate,zoom,shift,brightness')
  a = augment.augment_batch(images, SEED, config).numpy()
  b = augment.augment_batch(images, SEED, config).numpy()
  c = augment.augment_batch(images, tf.constant([1, 3], tf.int64),
                            config).numpy()
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_no_augmentation_is_identity():
  images = np.random.default_rng(3).random((4, 8, 8, 3)).astype(np.float32)
  np.testing.assert_array_equal(
      augment.augment_batch(images, SEED, _config('')).numpy(), images)


def _tf_warp(images, transforms):
  """TF's own kernel, the reference warp_bilinear matches."""
  transforms = tf.concat([transforms, tf.zeros([len(images), 2])], axis=1)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=transforms,
      output_shape=tf.shape(images)[1:3], fill_value=0.0,
      interpolation='BILINEAR', fill_mode='REFLECT').numpy()


def _random_warp_parameters(rng, n, size):
  # Far larger than the default magnitudes, so that many output pixels read
  # reflected points beyond every edge, and some exact integer positions.
  angles = rng.uniform(-math.pi, math.pi, n).astype(np.float32)
  scales = rng.uniform(0.4, 1.6, n).astype(np.float32)
  shifts = rng.uniform(-size, size, (n, 2)).astype(np.float32)
  angles[:4], scales[:4], shifts[:4] = 0.0, 1.0, [[0, 0], [3, -2], [-40, 7],
                                                  [0.5, 0.25]]
  return angles, scales, shifts


@pytest.mark.parametrize('shape', [(32, 32, 3), (12, 20, 1)])
def test_warp_matches_tf_projective_transform(shape):
  rng = np.random.default_rng(4)
  images = rng.random((64, *shape)).astype(np.float32)
  params = _random_warp_parameters(rng, 64, shape[0])
  no_flip = tf.zeros([64], tf.bool)
  transforms = _affine_matrices(*params, no_flip, *shape[:2])
  expected = _tf_warp(images, transforms)
  np.testing.assert_allclose(
      _warp(images, transforms).numpy(), expected, atol=2e-5)
  compiled = tf.function(_warp, jit_compile=True)
  np.testing.assert_allclose(compiled(images, transforms).numpy(), expected,
                             atol=2e-5)


def test_flip_inside_the_warp_is_a_flip_before_it():
  rng = np.random.default_rng(5)
  images = rng.random((32, 16, 16, 3)).astype(np.float32)
  params = _random_warp_parameters(rng, 32, 16)
  flips = tf.constant(rng.random(32) < 0.5)
  mirrored = tf.where(flips[:, None, None, None], images[:, :, ::-1], images)
  expected = _tf_warp(mirrored, _affine_matrices(
      *params, tf.zeros([32], tf.bool), 16, 16))
  np.testing.assert_allclose(
      _affine_transform(images, *params, flips).numpy(), expected,
      atol=2e-5)
