"""The trained checkpoints that tests of several modules share.

Each trains once per session (`trained` once per test: its tests change the
workdir), and only when a selected test asks for it: `-m "not slow"` skips
every test that uses one.
"""

import os

import pytest

from imgclf_jax import evaluate
from imgclf_jax import train
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
