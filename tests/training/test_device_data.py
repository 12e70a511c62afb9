"""device_data.py: the device-resident data mode: the batches mean what
tf.data's do, a step trains the same however the batch is split over devices,
and a real training run through train_and_evaluate."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imgclf_jax.config import resolve
from imgclf_jax.config import specs
from imgclf_jax.data import augment
from imgclf_jax.models import registry
from imgclf_jax.modes import evaluate
from imgclf_jax.modes import train
from imgclf_jax.training import device_data
from imgclf_jax.training import steps
from imgclf_jax.training import train_state as train_state_lib
from tests import helpers


def _pipeline(folder, num_devices=4, **overrides):
  config = resolve.for_training(
      helpers.small_config(f'folder:{folder}', **overrides), num_devices)
  return config, helpers.make_pipeline(config)


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
      images, labels, indices, jax.random.key(0), pipeline.spec.augment,
      pipeline.normalization, 3, jnp.asarray([1.0, 2.0, 3.0]))
  expected = pipeline.eval_transform(images[indices], labels[indices])
  np.testing.assert_allclose(np.asarray(batch['image']),
                             expected['image'].numpy(), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(batch['label']),
                                expected['label'].numpy())
  np.testing.assert_array_equal(np.asarray(batch['weight']),
                                labels[indices] + 1.0)


def test_epoch_indices_are_a_seeded_permutation(folder):
  config, pipeline = _pipeline(folder)
  resident = device_data.DeviceData(
      pipeline, steps.train_step_for(specs.optim_spec(config),
                                     pipeline.steps_per_epoch),
      config.seed, config.batch_size)
  epoch = np.stack(list(resident.train_batches(0)))
  assert epoch.shape == (pipeline.steps_per_epoch, config.batch_size)
  flat = epoch.ravel()
  assert len(set(flat.tolist())) == len(flat)  # no example twice
  assert flat.max() < resident.num_examples
  np.testing.assert_array_equal(epoch, np.stack(list(
      resident.train_batches(0))))
  assert not np.array_equal(epoch, np.stack(list(resident.train_batches(1))))


@pytest.mark.slow
def test_a_step_trains_the_same_on_one_device_or_four(folder):
  # Augmentation keys per example index and dropout masks per batch
  # position: the same update however the batch is split over devices.
  indices = np.array([3, 17, 0, 25, 8, 31, 12, 5], np.int32)
  params = []
  for devices in (jax.devices()[:1], jax.devices()[:4]):
    config, pipeline = _pipeline(folder, len(devices), data_on_device=True)
    optim = specs.optim_spec(config)
    resident = device_data.DeviceData(
        pipeline, steps.train_step_for(optim, pipeline.steps_per_epoch),
        config.seed, config.batch_size, devices)
    state = train_state_lib.create_train_state(
        jax.random.key(0), registry.create_model(specs.model_spec(config, 3)),
        pipeline.image_shape, optim, pipeline.steps_per_epoch)
    state, _ = resident.train_step(state, indices.reshape(len(devices), -1),
                                   jax.random.key(1))
    params.append(state.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
               *params)
  # ... with the augmentation on (config.augment's default): the batch the
  # step trained on is not the unaugmented one.
  images, labels = pipeline.arrays('train')
  args = (images, labels, indices, jax.random.key(2))
  spec = pipeline.spec.augment
  plain = device_data.make_batch(*args, augment.AugmentSpec(),
                                 pipeline.normalization, 3)
  augmented = device_data.make_batch(*args, spec, pipeline.normalization, 3)
  assert spec and not np.allclose(plain['image'], augmented['image'],
                                  atol=1e-3)


@pytest.mark.slow
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
