"""The device-resident data mode: same augmentation code, same batches'
meaning, and a real training run through train_and_evaluate."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from imgclf_jax import augment_math
from imgclf_jax import configuration
from imgclf_jax import datasets
from imgclf_jax import device_data
from imgclf_jax import evaluate
from imgclf_jax import input_pipeline
from imgclf_jax import models
from imgclf_jax import train
from imgclf_jax import train_state as train_state_lib
from imgclf_jax.errors import UserError
from tests import helpers

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


@pytest.mark.parametrize('names', [ALL, ('flip',), ('rotate', 'brightness')])
def test_jax_and_tf_run_the_same_augmentation(names):
  images = np.random.default_rng(0).random((16, 12, 12, 3)).astype(np.float32)
  spec = augment_math.AugmentSpec(names, rotation_degrees=40.0,
                                  zoom_range=0.3, shift_fraction=0.3,
                                  brightness_delta=0.2)
  in_tf = augment_math.augment(augment_math.tf_ops(), tf.constant(images),
                               _fixed_uniform('tf'), spec).numpy()
  in_jax = jax.jit(lambda x: augment_math.augment(
      augment_math.jax_ops(), x, _fixed_uniform('jax'), spec))(images)
  np.testing.assert_allclose(np.asarray(in_jax), in_tf, atol=2e-5)
  assert not np.allclose(in_tf, images, atol=1e-3)  # it did something


def _pipeline(folder, num_devices=4, **overrides):
  config = configuration.for_training(
      helpers.small_config(f'folder:{folder}', **overrides), num_devices)
  return config, input_pipeline.InputPipeline(datasets.make_source(config),
                                              config)


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return helpers.make_image_folder(tmp_path_factory.mktemp('resident'),
                                   per_class=(12, 12, 12))


def test_unaugmented_batch_matches_the_tf_data_batch(folder):
  config, pipeline = _pipeline(folder, augment='', class_weights='1,2,3')
  images, labels = pipeline.arrays('train')
  assert images.dtype == np.uint8 and images.shape[1:] == (16, 16, 3)
  indices = np.array([5, 0, 7, 3], np.int32)
  batch = device_data.make_batch(
      images, labels, indices, jax.random.key(0), pipeline.augment_spec,
      pipeline.normalization, 3, jnp.asarray([1.0, 2.0, 3.0]))
  expected = pipeline._eval_transform(images[indices], labels[indices])  # pylint: disable=protected-access
  np.testing.assert_allclose(np.asarray(batch['image']),
                             expected['image'].numpy(), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(batch['label']),
                                expected['label'].numpy())
  np.testing.assert_array_equal(np.asarray(batch['weight']),
                                labels[indices] + 1.0)


def test_epoch_indices_are_a_seeded_permutation(folder):
  config, pipeline = _pipeline(folder)
  resident = device_data.DeviceData(pipeline, config)
  epoch = np.stack(list(resident.train_batches(0)))
  assert epoch.shape == (pipeline.steps_per_epoch, config.batch_size)
  flat = epoch.ravel()
  assert len(set(flat.tolist())) == len(flat)  # no example twice
  assert flat.max() < resident.num_examples
  np.testing.assert_array_equal(epoch, np.stack(list(
      resident.train_batches(0))))
  assert not np.array_equal(epoch, np.stack(list(resident.train_batches(1))))


def test_a_step_trains_the_same_on_one_device_or_four(folder):
  # Augmentation keys per example index and dropout masks per batch
  # position: the same update however the batch is split over devices.
  indices = np.array([3, 17, 0, 25, 8, 31, 12, 5], np.int32)
  params = []
  for devices in (jax.devices()[:1], jax.devices()[:4]):
    config, pipeline = _pipeline(folder, len(devices), data_on_device=True)
    resident = device_data.DeviceData(pipeline, config, devices)
    state = train_state_lib.create_train_state(
        jax.random.key(0), models.create_model(config, 3),
        pipeline.image_shape, config, pipeline.steps_per_epoch)
    state, _ = resident.train_step(state, indices.reshape(len(devices), -1),
                                   jax.random.key(1))
    params.append(state.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
               *params)
  # ... with the augmentation on (config.augment's default): the batch the
  # step trained on is not the unaugmented one.
  images, labels = pipeline.arrays('train')
  args = (images, labels, indices, jax.random.key(2))
  spec = pipeline.augment_spec
  plain = device_data.make_batch(*args, augment_math.AugmentSpec(),
                                 pipeline.normalization, 3)
  augmented = device_data.make_batch(*args, spec, pipeline.normalization, 3)
  assert spec and not np.allclose(plain['image'], augmented['image'],
                                  atol=1e-3)


def test_training_with_data_on_device_learns_and_evaluates(folder, tmp_path):
  config = helpers.small_config(f'folder:{folder}', data_on_device=True,
                                num_epochs=3, learning_rate=3e-3)
  record = train.train_and_evaluate(config, str(tmp_path))
  with open(os.path.join(tmp_path, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  assert [r['epoch'] for r in records] == [1, 2, 3]
  # Three colours: learnable, so the training loss goes down.
  assert records[-1]['train_loss'] < records[0]['train_loss']
  assert record['validation_accuracy'] > 0.5
  metrics = evaluate.evaluate_checkpoint(config, str(tmp_path))
  assert metrics['accuracy'] == pytest.approx(record['validation_accuracy'],
                                              abs=1e-6)


@pytest.mark.parametrize('key, value', [('oversample', True),
                                        ('minority_augment', 'flip')])
def test_data_on_device_refuses_tf_data_only_features(folder, tmp_path, key,
                                                      value):
  config = helpers.small_config(f'folder:{folder}', data_on_device=True,
                                **{key: value})
  with pytest.raises(UserError, match=f'--config.{key}=.*data_on_device'):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.listdir(tmp_path)
