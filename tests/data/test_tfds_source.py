"""tfds_source.py: a TFDS dataset's splits (a held-out validation part, a
sliced train split), examples at indices read as slices, labels without
images, a sample in runs of records, and crops from the encoded records."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from imgclf_jax.data import preprocess
from imgclf_jax.data import source_base
from imgclf_jax.data import tfds_source
from imgclf_jax.errors import UserError
from tests import helpers
from tests.helpers import assert_examples_at as _assert_examples_at
from tests.helpers import pairs as _pairs
from tests.helpers import train_in as _train


def _pipeline(config, normalization=None):
  return helpers.make_pipeline(config, normalization)


def test_tfds_source_holds_out_validation_from_train():
  config = helpers.small_config('mnist', validation_split='')
  with tfds.testing.mock_data(num_examples=40):
    source = helpers.make_source(config)
    assert source.info.channels == 1
    assert source.info.class_names == tuple(str(i) for i in range(10))
    assert source._resolve('train') == 'train[:36]'
    assert source._resolve('validation') == 'train[36:]'
    pipeline = helpers.make_pipeline(config, source=source)
    batch = next(pipeline.train_batches(0))
  assert batch['image'].shape == (8, 16, 16, 1)
  assert batch['label'].shape == (8, 10)


def test_tfds_sliced_train_split_needs_its_validation_split():
  # 'train[:50%][k:]' is no TFDS split: the user names both parts.
  config = helpers.small_config('mnist', train_split='train[:50%]')
  with tfds.testing.mock_data(num_examples=40):
    with pytest.raises(UserError, match=r"train_split='train\[:50%\]' is a "
                       r"slice.*--config.validation_split='train\[90%:\]'"):
      helpers.make_source(config)
    summed = helpers.small_config('mnist', train_split='train+test')
    with pytest.raises(UserError, match=r"'train\+test' is a slice or a sum"):
      helpers.make_source(summed)
    config.validation_split = 'train[50%:]'
    source = helpers.make_source(config)
    assert source._resolve('train') == 'train[:50%]'
    assert source._resolve('validation') == 'train[50%:]'


def test_tfds_examples_at_indices():
  config = helpers.small_config('mnist', validation_split='')
  with tfds.testing.mock_data(num_examples=40):
    source = helpers.make_source(config)
    full = _pairs(source.examples('validation'))
    got = _pairs(source.examples('validation', [3, 0]))
  # (mock_data does not slice: the split holds all 40 mock examples.)
  assert len(full) > 3
  _assert_examples_at(got, full, (0, 3))


def test_tfds_class_counts_read_labels_only():
  config = helpers.small_config('mnist', validation_split='')
  with tfds.testing.mock_data(num_examples=40):
    source = helpers.make_source(config)
    for split in ('train', 'validation'):
      from_examples = [int(l) for _, l in
                       source.examples(split).as_numpy_iterator()]
      np.testing.assert_array_equal(source.labels(split), from_examples)
      assert len(from_examples) == source.num_examples(split)


def test_unknown_tfds_name(tmp_path):
  with pytest.raises(UserError, match=r"'no_such_dataset': no TFDS dataset"):
    _train(helpers.small_config('no_such_dataset'), tmp_path)


class ImgclfTestImages(tfds.core.GeneratorBasedBuilder):
  """60 train and 10 test JPEG images of 40 x 50, 3 classes (written to the
  test's data_dir: a real prepared dataset, sliced as TFDS slices it)."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3),
                                         encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(names=['a', 'b', 'c'])}),
        supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(60, 0),
            'test': self._generate_examples(10, 1000)}

  def _generate_examples(self, n, offset):
    for i in range(n):
      yield i, {'image': helpers.smooth_noise(40, 50, seed=offset + i),
                'label': i % 3}


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  ImgclfTestImages(data_dir=data_dir).download_and_prepare()
  return data_dir


def test_tfds_indices_in_runs_are_read_as_slices(tfds_dir):
  config = helpers.small_config('imgclf_test_images', data_dir=tfds_dir,
                                validation_split='')
  source = helpers.make_source(config)
  assert source._resolve('train') == 'train[:54]'  # pylint: disable=protected-access
  full = _pairs(source.examples('train'))
  runs = [1, 2, 3, 10, 11, 40, 53]
  assert (source._slices('train[:54]', np.array(runs))  # pylint: disable=protected-access
          == 'train[1:4]+train[10:12]+train[40:41]+train[53:54]')
  _assert_examples_at(_pairs(source.examples('train', runs)), full, runs)
  # The held-out validation split maps onto the records after the 54th.
  validation = _pairs(source.examples('validation'))
  assert (source._slices('train[54:]', np.array([0, 5]))  # pylint: disable=protected-access
          == 'train[54:55]+train[59:60]')
  _assert_examples_at(_pairs(source.examples('validation', [0, 5])),
                      validation, (0, 5))
  # A sum of splits: positions past the first part are in the second.
  summed = helpers.small_config('imgclf_test_images', data_dir=tfds_dir,
                                train_split='train[50:]+test',
                                validation_split='train[:10]')
  both = helpers.make_source(summed)
  assert (both._slices('train[50:]+test', np.array([9, 10, 11]))  # pylint: disable=protected-access
          == 'train[59:60]+test[0:2]')
  _assert_examples_at(_pairs(both.examples('train', [9, 10, 11])),
                      _pairs(both.examples('train')), (9, 10, 11))


def test_tfds_sample_is_runs_of_records_drawn_with_the_fixed_seed(
    tfds_dir, monkeypatch):
  monkeypatch.setattr(tfds_source, 'SAMPLE_BLOCKS', 4)
  config = helpers.small_config('imgclf_test_images', data_dir=tfds_dir,
                                validation_split='test',
                                normalization_sample_size=10)
  source = helpers.make_source(config)
  sample = source.sample_indices('train', 10)
  # 4 runs of 3 records at slots drawn from the 20 slots of 3: 10 records.
  slots = np.sort(np.random.default_rng(source_base.SAMPLE_SEED).choice(
      20, 4, replace=False))
  np.testing.assert_array_equal(
      sample, (slots[:, None] * 3 + np.arange(3)).ravel()[:10])
  assert source._slices('train', sample).count('+') <= 3  # pylint: disable=protected-access
  pipeline = _pipeline(config)
  everything = _pairs(helpers.make_pipeline(
      config, {'mean': [0.0] * 3, 'std': [1.0] * 3},
      source=source).resized_examples('train'))
  mean, std = helpers.channel_stats([everything[i][0] for i in sample])
  np.testing.assert_allclose(pipeline.normalization['mean'], mean, rtol=1e-12)
  np.testing.assert_allclose(pipeline.normalization['std'], std, rtol=1e-9)


def test_tfds_crops_come_from_the_encoded_records(tfds_dir):
  config = helpers.small_config('imgclf_test_images', data_dir=tfds_dir,
                                validation_split='test',
                                crop='random_resized')
  pipeline = _pipeline(config)
  records = [r for r, _ in pipeline.source.records('test').as_numpy_iterator()]
  assert records[0][:2] == b'\xff\xd8'  # still the stored JPEG
  images = [image for image, _ in _pairs(pipeline.resized_examples('test'))]
  np.testing.assert_array_equal(
      images[3], preprocess.central_crop(tf.constant(records[3]), 16,
                                         3).numpy())
  batch = next(pipeline.train_batches(0))
  assert batch['image'].shape == (8, 16, 16, 3)
