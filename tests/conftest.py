"""The trained checkpoints that tests of several modules share.

Each trains once per session (`trained` once per test: its tests change the
workdir), and only when a selected test asks for it: `-m "not slow"` skips
every test that uses one.
"""

import os

import pytest

from imgclf_jax.modes import evaluate
from imgclf_jax.modes import train
from tests import helpers


@pytest.fixture(scope='session')
def run(tmp_path_factory):
  """The report run (helpers.CLASSES, helpers.REPAINTED): 3 epochs on a
  generated folder, then evaluated on its `test` split, whose repainted
  images are the model's known mistakes.

  Returns (data root, workdir, config, the eval result).
  """
  root = helpers.make_image_folder(tmp_path_factory.mktemp('data'),
                                   per_class=(12, 12, 12),
                                   splits=('train', 'test'), ext='png')
  for i, (cls, index, colour) in enumerate(helpers.REPAINTED):
    helpers.paint(os.path.join(root, 'test', cls, f'{index:03d}.png'), colour,
                  i)
  workdir = str(tmp_path_factory.mktemp('run'))
  config = helpers.small_config(f'folder:{root}', num_epochs=3, top_k=2,
                                report_images=6, augment='')
  train.train_and_evaluate(config, workdir)
  test_config = config.copy_and_resolve_references()
  test_config.eval_split = 'test'
  result = evaluate.evaluate_checkpoint(test_config, workdir)
  return root, workdir, config, result


@pytest.fixture(scope='session')
def colour_folder(tmp_path_factory):
  """The folder `full_run` trains on: 12 JPEGs of each of 3 colours."""
  return helpers.make_image_folder(tmp_path_factory.mktemp('data'),
                                   per_class=(12, 12, 12), ext='jpg')


@pytest.fixture(scope='session')
def full_run(colour_folder, tmp_path_factory):
  """Three uninterrupted epochs on the generated folder."""
  workdir = str(tmp_path_factory.mktemp('full'))
  config = helpers.small_config(f'folder:{colour_folder}', num_epochs=3)
  last = train.train_and_evaluate(config, workdir)
  return config, workdir, last


@pytest.fixture(scope='session')
def two_class_folder(tmp_path_factory):
  """The folder `trained` trains on: 10 PNGs of each of 2 colours."""
  return helpers.make_image_folder(tmp_path_factory.mktemp('data'),
                                   per_class=(10, 10))


@pytest.fixture
def trained(two_class_folder, tmp_path):
  """One epoch (2 steps) on two_class_folder in tmp_path, for a test to
  change: returns (config, workdir)."""
  config = helpers.small_config(f'folder:{two_class_folder}', num_epochs=1)
  helpers.train_in(config, tmp_path)
  return config, str(tmp_path)


def strong_config(folder, model, **overrides):
  """A small run of a BatchNorm `model` with the strong recipes' parts:
  Nesterov SGD, decoupled weight decay, a warmup then linear decay, the
  BatchNorm-bias step scale, the lookahead, an EMA, flip-and-translate
  augmentation and test-time augmentation."""
  settings = dict(model=model, dropout_rate=0.0, num_epochs=3,
                  optimizer='sgd', momentum=0.85, nesterov=True,
                  learning_rate=0.2, weight_decay=5e-3, lr_schedule='linear',
                  warmup_epochs=1.0, lr_start_fraction=0.2,
                  lr_end_fraction=0.1, norm_bias_lr_scale=4.0,
                  ema_decay=0.9, augment='flip,translate', tta='flip',
                  whiten_bias_epochs=1.0, lookahead_every_steps=2,
                  lookahead_start_epochs=1.0)
  return helpers.small_config(f'folder:{folder}', **{**settings, **overrides})


@pytest.fixture(scope='session')
def fast_cifar_run(colour_folder, tmp_path_factory):
  """Three uninterrupted epochs of fast_cifar: (config, workdir, last
  record)."""
  workdir = str(tmp_path_factory.mktemp('fast_cifar'))
  config = strong_config(colour_folder, 'fast_cifar')
  last = train.train_and_evaluate(config, workdir)
  return config, workdir, last
