"""augment.py: the augmentations' names and magnitudes (AugmentSpec), and
one arithmetic that TF and JAX run alike."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from imgclf_jax.data import augment
from imgclf_jax.errors import UserError
from tests.helpers import augment_spec as _config


def test_parse_augment_rejects_unknown_names():
  assert augment.parse_augment(' flip, shift ') == ('flip', 'shift')
  assert augment.parse_augment('') == ()
  with pytest.raises(UserError, match=r"unknown augmentation.*'blur'"):
    augment.parse_augment('flip,blur')


def test_spec_from_config_and_scaled():
  spec = _config('flip,zoom', rotation_degrees=10.0, zoom_range=0.1,
                 shift_fraction=0.2, brightness_delta=0.3)
  assert spec.names == ('flip', 'zoom') and spec
  assert not _config('')
  double = spec.scaled(2.0)
  assert double.names == spec.names
  assert (double.rotation_degrees, double.zoom_range, double.shift_fraction,
          double.brightness_delta) == pytest.approx((20.0, 0.2, 0.4, 0.6))


ALL = ('flip', 'rotate', 'zoom', 'shift', 'brightness')


def _fixed_uniform(framework):
  """uniform(stream, shape, low, high) with the same values in TF and JAX:
  a fixed ramp per stream, mapped to [low, high)."""

  def uniform(stream, shape, low, high):
    size = int(np.prod(shape))
    ramp = ((np.arange(size) * 0.37 + stream * 0.11) % 1.0).reshape(shape)
    values = (low + (high - low) * ramp).astype(np.float32)
    return tf.constant(values) if framework == 'tf' else jnp.asarray(values)

  return uniform


@pytest.mark.parametrize('names', [ALL, ('flip',), ('rotate', 'brightness'),
                                   ('flip', 'translate')])
def test_jax_and_tf_run_the_same_augmentation(names):
  images = np.random.default_rng(0).random((16, 12, 12, 3)).astype(np.float32)
  spec = augment.AugmentSpec(names, rotation_degrees=40.0,
                                  zoom_range=0.3, shift_fraction=0.3,
                                  brightness_delta=0.2, translate_pixels=2)
  in_tf = augment.augment(augment.tf_ops(), tf.constant(images),
                               _fixed_uniform('tf'), spec).numpy()
  in_jax = jax.jit(lambda x: augment.augment(
      augment.jax_ops(), x, _fixed_uniform('jax'), spec))(images)
  np.testing.assert_allclose(np.asarray(in_jax), in_tf, atol=2e-5)
  assert not np.allclose(in_tf, images, atol=1e-3)  # it did something


@pytest.mark.parametrize('draw, shift', [(0.0, -2), (0.35, -1), (0.5, 0),
                                         (0.99, 2)])
def test_translate_moves_whole_pixels_with_reflected_edges(draw, shift):
  images = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
  spec = augment.AugmentSpec(('translate',), translate_pixels=2)

  def uniform(stream, shape, low, high):
    assert stream == 5
    return jnp.full(shape, low + draw * (high - low), jnp.float32)

  out = np.asarray(augment.augment(augment.jax_ops(),
                                        jnp.asarray(images), uniform, spec))
  # Content moves by `shift` pixels right and down: exact pixel values.
  expected = np.roll(images, (shift, shift), axis=(1, 2))
  inner = slice(2, 6)
  np.testing.assert_allclose(out[:, inner, inner], expected[:, inner, inner],
                             atol=1e-6)
  if shift > 0:  # the uncovered border is the image's own edge, mirrored
    np.testing.assert_allclose(out[:, shift:, 0], images[:, :-shift, shift - 1],
                               atol=1e-6)
