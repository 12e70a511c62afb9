"""preprocess.py: the random-resized and central crops' windows, a JPEG
decoded only in its window, and the normalisation every path shares."""

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from imgclf_jax.data import preprocess
from tests import helpers


def test_random_resized_windows_are_within_bounds_and_fixed_by_the_seed():
  height, width = 375, 500
  central = preprocess.central_window(height, width).numpy()
  areas = []
  for i in range(200):
    seed = tf.constant([3, i], tf.int64)
    y, x, h, w = preprocess.random_resized_window(height, width, seed).numpy()
    again = preprocess.random_resized_window(height, width, seed).numpy()
    np.testing.assert_array_equal(again, [y, x, h, w])
    assert 0 <= y and y + h <= height and 0 <= x and x + w <= width
    if [y, x, h, w] == central.tolist():
      continue  # 10 tries found no window: the central crop
    # Within the area and aspect ranges, up to the rounding to pixels.
    assert 0.08 * 0.95 <= h * w / (height * width) <= 1.0
    assert 3 / 4 * 0.95 <= w / h <= 4 / 3 * 1.05
    areas.append(h * w / (height * width))
  assert len(areas) > 150 and min(areas) < 0.3 and max(areas) > 0.7
  other = [preprocess.random_resized_window(
      height, width, tf.constant([4, i], tf.int64)).numpy().tolist()
           for i in range(5)]
  assert other != [preprocess.random_resized_window(
      height, width, tf.constant([3, i], tf.int64)).numpy().tolist()
                   for i in range(5)]


def test_central_window_is_the_central_0875_square():
  np.testing.assert_array_equal(preprocess.central_window(375, 500),
                                [24, 86, 328, 328])  # int(0.875 * 375) = 328
  np.testing.assert_array_equal(preprocess.central_window(256, 256),
                                [16, 16, 224, 224])
  np.testing.assert_array_equal(preprocess.central_window(1, 9), [0, 4, 1, 1])


@pytest.mark.parametrize('subsampling', [0, 2])  # 4:4:4 and 4:2:0
def test_jpeg_decode_and_crop_equals_decode_then_crop(subsampling):
  pixels = helpers.smooth_noise(77, 101, seed=subsampling)
  jpeg = tf.constant(helpers.jpeg_bytes(pixels, subsampling))
  # The same pixels as the JPEG decodes to, in a lossless PNG: decode_window
  # decodes it whole and crops (its path for formats other than JPEG).
  png = tf.constant(helpers.png_bytes(
      tf.io.decode_jpeg(jpeg, channels=3).numpy()))
  windows = [(0, 0, 77, 101), (3, 5, 40, 51), (17, 33, 21, 9), (8, 16, 32, 48),
             (16, 0, 61, 101), (1, 1, 75, 99), (30, 70, 47, 31)]
  for window in windows:
    fused = preprocess.decode_window(jpeg, 3, lambda h, w: window).numpy()
    plain = preprocess.decode_window(png, 3, lambda h, w: window).numpy()
    assert fused.shape == plain.shape == (window[2], window[3], 3)
    y, x, h, w = window
    if subsampling == 0:
      np.testing.assert_array_equal(fused, plain)
      continue
    # 4:2:0: libjpeg upsamples the colour at the window's left and right
    # edges as at an image's edge; every other pixel is the same.
    inner = [c for c in range(w) if not (c == 0 and x > 0) and
             not (c == w - 1 and x + w < 101)]
    np.testing.assert_array_equal(fused[:, inner], plain[:, inner])


def test_crop_from_a_non_jpeg_file_uses_the_same_window():
  pixels = helpers.smooth_noise(60, 90, seed=5)
  seed = tf.constant([1, 2], tf.int64)
  got = preprocess.random_resized_crop(
      tf.constant(helpers.png_bytes(pixels)), seed, 16, 3)
  y, x, h, w = preprocess.random_resized_window(60, 90, seed).numpy()
  expected = preprocess.resize_image(pixels[y:y + h, x:x + w], 16, 3)
  np.testing.assert_array_equal(got.numpy(), expected.numpy())
  central = preprocess.central_crop(
      tf.constant(helpers.png_bytes(pixels)), 16, 3).numpy()
  y, x, h, w = preprocess.central_window(60, 90).numpy()
  np.testing.assert_array_equal(central, preprocess.resize_image(
      pixels[y:y + h, x:x + w], 16, 3).numpy())


def test_normalize_is_the_same_for_tf_jax_and_numpy():
  # tf.data (and predict), device_data's step and the exported model all
  # call preprocess.normalize: the same float32 numbers from each.
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 1, (2, 4, 4, 3)).astype(np.float32)
  stats = {'mean': [0.4, 0.5, 0.6], 'std': [0.2, 0.25, 0.3]}
  expected = ((images - np.float32([0.4, 0.5, 0.6])) /
              np.float32([0.2, 0.25, 0.3]))
  from_tf = preprocess.normalize(tf.constant(images), stats)
  from_jax = preprocess.normalize(jnp.asarray(images), stats)
  assert isinstance(from_tf, tf.Tensor) and from_tf.dtype == tf.float32
  assert isinstance(from_jax, jnp.ndarray) and from_jax.dtype == jnp.float32
  for got in (from_tf.numpy(), np.asarray(from_jax),
              preprocess.normalize(images, stats)):
    np.testing.assert_allclose(got, expected, rtol=1e-6)
