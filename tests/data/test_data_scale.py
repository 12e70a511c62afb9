"""Datasets larger than memory: the cache decision, the normalisation
statistics of a fixed sample (or given ones), the random-resized and central
crops decoded from the files, and a TFDS split read as slices."""

import io
import logging
import os

import jax
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from imgclf_jax.config import keys
from imgclf_jax.config import resolve
from imgclf_jax.config import specs
from imgclf_jax.data import input_pipeline
from imgclf_jax.data import preprocess
from imgclf_jax.data import sources
from imgclf_jax.errors import UserError
from imgclf_jax.models import registry
from imgclf_jax.modes import predict
from imgclf_jax.training import setup
from imgclf_jax.training import train_state as train_state_lib
from tests import helpers
from tests.helpers import assert_examples_at as _assert_examples_at
from tests.helpers import pairs as _pairs


def _pipeline(config, normalization=None):
  return input_pipeline.InputPipeline(sources.make_source(config), config,
                                      normalization)


def _break(paths):
  for path in paths:
    with open(path, 'wb') as f:
      f.write(b'not an image')


def _stats(images):
  """mean/std of uint8 images [N, S, S, C] per channel, as [0, 1] floats."""
  x = np.asarray(images, np.float64) / 255.0
  return x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))


def _jpeg(pixels, subsampling=0, quality=95) -> bytes:
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, 'JPEG', quality=quality,
                               subsampling=subsampling)
  return out.getvalue()


def _png(pixels) -> bytes:
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, 'PNG')
  return out.getvalue()


def _smooth_noise(height, width, seed):
  """A photo-like uint8 RGB image: an upsampled colour field plus noise."""
  rng = np.random.default_rng(seed)
  low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
  image = np.asarray(Image.fromarray(low).resize((width, height),
                                                Image.BICUBIC), np.int16)
  return np.clip(image + rng.integers(-25, 26, image.shape), 0,
                 255).astype(np.uint8)


# ----------------------------------------------------------------------------
# The cache decision


def test_auto_caches_within_the_budget_and_says_so(tmp_path, caplog):
  root = helpers.make_image_folder(tmp_path, per_class=(10, 10))
  # 18 train + 2 validation images of 16 x 16 x 3 = 15,360 bytes.
  config = helpers.small_config(f'folder:{root}', cache='auto',
                                cache_budget_gb=15_360 / 1e9)
  with caplog.at_level(logging.INFO):
    pipeline = _pipeline(config)
  assert pipeline.caches('train') and pipeline.caches('validation')
  assert ('Caching the 18 train and 2 validation images (15.4 kB decoded at '
          '16x16x3) in memory: within --config.cache_budget_gb=1.536e-05'
          ) in caplog.text
  first = [b['image'] for b in pipeline.train_batches(0)]
  _break(pipeline.source.files('train'))  # the cache holds them now
  again = [b['image'] for b in pipeline.train_batches(0)]
  np.testing.assert_array_equal(np.stack(first), np.stack(again))


def test_auto_does_not_cache_over_the_budget_and_says_so(tmp_path, caplog):
  root = helpers.make_image_folder(tmp_path, per_class=(10, 10))
  config = helpers.small_config(f'folder:{root}', cache='auto',
                                cache_budget_gb=15_359 / 1e9)
  with caplog.at_level(logging.INFO):
    pipeline = _pipeline(config)
  assert not pipeline.caches('train') and not pipeline.caches('validation')
  assert ('Not caching: the 18 train and 2 validation images (15.4 kB decoded '
          'at 16x16x3) would take more than --config.cache_budget_gb='
          '1.5359e-05; each epoch decodes the files.') in caplog.text
  list(pipeline.train_batches(0))
  _break(pipeline.source.files('train'))  # read again each epoch
  with pytest.raises(UserError, match='cannot decode image file'):
    list(pipeline.train_batches(0))


def test_cache_true_and_false_are_honoured_whatever_the_budget(tmp_path,
                                                                caplog):
  root = helpers.make_image_folder(tmp_path, per_class=(10, 10))
  with caplog.at_level(logging.INFO):
    forced = _pipeline(helpers.small_config(f'folder:{root}', cache=True,
                                            cache_budget_gb=0.0))
    off = _pipeline(helpers.small_config(f'folder:{root}', cache=False,
                                         cache_budget_gb=100.0))
  assert forced.caches('train') and not off.caches('train')
  assert 'in memory (--config.cache=True)' in caplog.text
  assert '(--config.cache=False): each epoch decodes the files' in caplog.text


def test_another_split_is_decided_alone(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(9, 9),
                                   splits=('train', 'test'))
  # train (16) + validation (2) are over 20 images' budget... no: 18 images
  # of 768 bytes = 13,824 bytes; test alone is 18 images too. A budget of
  # 14,000 bytes holds either group.
  pipeline = _pipeline(helpers.small_config(f'folder:{root}',
                                            cache_budget_gb=14_000 / 1e9))
  assert pipeline.caches('train') and pipeline.caches('test')
  tight = _pipeline(helpers.small_config(f'folder:{root}',
                                         cache_budget_gb=13_000 / 1e9))
  assert not tight.caches('validation') and not tight.caches('test')


def test_cifar10_sized_splits_are_cached_by_default():
  # 45,000 + 5,000 images of 32 x 32 x 3: 154 MB, within the default 8 GB,
  # so the default ('auto') caches them as the old default (True) did.
  config = keys.get_config()
  assert config.cache == 'auto' and config.cache_budget_gb == 8.0
  assert 50_000 * 32 * 32 * 3 <= config.cache_budget_gb * 1e9
  assert config.normalization_sample_size == 50_000


# ----------------------------------------------------------------------------
# Normalisation statistics


def test_a_split_within_the_sample_size_gets_the_full_pass(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(12, 12))
  config = helpers.small_config(f'folder:{root}', normalization_sample_size=22)
  pipeline = _pipeline(config)
  assert pipeline.source.num_examples('train') == 22
  # Exactly the pass over every training image (the computation of before
  # the sample existed): the same numbers, bit for bit.
  full = pipeline._statistics(pipeline.resized_examples('train'))  # pylint: disable=protected-access
  assert pipeline.normalization == full
  mean, std = _stats(pipeline.arrays('train')[0])
  np.testing.assert_allclose(full['mean'], mean, rtol=1e-12)
  np.testing.assert_allclose(full['std'], std, rtol=1e-9)


def test_a_larger_split_is_measured_on_exactly_its_sample(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(12, 12))
  config = helpers.small_config(f'folder:{root}', normalization_sample_size=7,
                                cache=False)
  source = sources.make_source(config)
  sample = source.sample_indices('train', 7)
  assert len(sample) == 7 and len(set(sample)) == 7
  assert np.all(np.diff(sample) > 0) and sample[-1] < 22
  # Files outside the sample are never decoded for the statistics.
  everything = _pairs(input_pipeline.InputPipeline(
      source, config, {'mean': [0.0] * 3, 'std': [1.0] * 3}).resized_examples(
          'train'))
  _break([p for i, p in enumerate(source.files('train')) if i not in sample])
  pipeline = input_pipeline.InputPipeline(source, config)
  mean, std = _stats([everything[i][0] for i in sample])
  np.testing.assert_allclose(pipeline.normalization['mean'], mean, rtol=1e-12)
  np.testing.assert_allclose(pipeline.normalization['std'], std, rtol=1e-9)
  full_mean, _ = _stats([image for image, _ in everything])
  assert not np.allclose(full_mean, mean, rtol=1e-6)


def test_the_sample_is_the_same_whatever_the_seed_or_the_process(
    tmp_path, monkeypatch):
  root = helpers.make_image_folder(tmp_path, per_class=(12, 12))
  configs = [helpers.small_config(f'folder:{root}',
                                  normalization_sample_size=9, seed=seed,
                                  shuffle_buffer_size=buffer)
             for seed, buffer in ((0, 64), (7, 3))]
  first = _pipeline(configs[0])
  sample = first.source.sample_indices('train', 9)
  # Another process of a multi-process run (jax.process_index() 1 of 2),
  # another seed, another shuffle buffer: the same sample, the same numbers.
  monkeypatch.setattr(jax, 'process_index', lambda *a, **k: 1)
  monkeypatch.setattr(jax, 'process_count', lambda *a, **k: 2)
  other = _pipeline(configs[1])
  np.testing.assert_array_equal(other.source.sample_indices('train', 9),
                                sample)
  assert other.normalization == first.normalization
  # Drawn with sources.SAMPLE_SEED from the 22 positions, nothing else.
  expected = np.sort(np.random.default_rng(sources.SAMPLE_SEED).choice(
      22, 9, replace=False))
  np.testing.assert_array_equal(sample, expected)


def test_given_statistics_are_used_as_given_without_reading_images(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(6, 6))
  config = helpers.small_config(f'folder:{root}', augment='', cache=False,
                                normalization_mean=(0.1, 0.2, 0.3),
                                normalization_std=(0.5, 0.25, 2.0))
  source = sources.make_source(config)
  unit = input_pipeline.InputPipeline(
      source, helpers.small_config(f'folder:{root}', cache=False,
                                   normalization='unit'))
  pixels = next(unit.eval_batches('validation'))['image']
  _break(source.files('train'))  # the statistics read no image
  pipeline = input_pipeline.InputPipeline(source, config)
  assert pipeline.normalization == {'mean': [0.1, 0.2, 0.3],
                                    'std': [0.5, 0.25, 2.0]}
  got = next(pipeline.eval_batches('validation'))['image']
  np.testing.assert_allclose(got, (pixels - [0.1, 0.2, 0.3]) /
                             np.array([0.5, 0.25, 2.0]), rtol=1e-6, atol=1e-6)


def test_given_statistics_need_one_number_per_channel(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(6, 6))
  config = helpers.small_config(f'folder:{root}', normalization_mean=(0.5,),
                                normalization_std=(0.2,))
  with pytest.raises(UserError, match=r"--config.normalization_mean=\(0.5,\) "
                     r"has 1 number\(s\), but .* has 3 channel\(s\): give one "
                     'number per channel'):
    _pipeline(config)


def test_a_resumed_run_warns_that_it_keeps_its_statistics(tmp_path, caplog):
  root = helpers.make_image_folder(tmp_path, per_class=(6, 6))
  config = helpers.small_config(f'folder:{root}',
                                normalization_mean=(0.1, 0.2, 0.3),
                                normalization_std=(0.5, 0.5, 0.5))
  saved = {'mean': [0.4] * 3, 'std': [0.2] * 3}
  with caplog.at_level(logging.WARNING):
    pipeline = _pipeline(config, saved)
  assert pipeline.normalization == saved
  assert "Using the checkpoint's normalisation statistics" in caplog.text


# ----------------------------------------------------------------------------
# Crops


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
  pixels = _smooth_noise(77, 101, seed=subsampling)
  jpeg = tf.constant(_jpeg(pixels, subsampling))
  # The same pixels as the JPEG decodes to, in a lossless PNG: decode_window
  # decodes it whole and crops (its path for formats other than JPEG).
  png = tf.constant(_png(tf.io.decode_jpeg(jpeg, channels=3).numpy()))
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
  pixels = _smooth_noise(60, 90, seed=5)
  seed = tf.constant([1, 2], tf.int64)
  got = preprocess.random_resized_crop(tf.constant(_png(pixels)), seed, 16, 3)
  y, x, h, w = preprocess.random_resized_window(60, 90, seed).numpy()
  expected = preprocess.resize_image(pixels[y:y + h, x:x + w], 16, 3)
  np.testing.assert_array_equal(got.numpy(), expected.numpy())
  central = preprocess.central_crop(tf.constant(_png(pixels)), 16, 3).numpy()
  y, x, h, w = preprocess.central_window(60, 90).numpy()
  np.testing.assert_array_equal(central, preprocess.resize_image(
      pixels[y:y + h, x:x + w], 16, 3).numpy())


def _jpeg_folder(root, per_class=(8, 8), size=(60, 90)):
  for c, n in enumerate(per_class):
    folder = os.path.join(root, 'train', f'class_{c}')
    os.makedirs(folder)
    for i in range(n):
      with open(os.path.join(folder, f'{i:02d}.jpg'), 'wb') as f:
        f.write(_jpeg(_smooth_noise(*size, seed=100 * c + i)))
  return str(root)


def test_crop_training_batches_are_fixed_by_seed_and_epoch(tmp_path,
                                                           caplog):
  root = _jpeg_folder(tmp_path)
  config = helpers.small_config(f'folder:{root}', crop='random_resized',
                                augment='')
  with caplog.at_level(logging.INFO):
    pipeline = _pipeline(config)
  assert not pipeline.caches('train') and not pipeline.caches('validation')
  assert ('Not caching the train and validation images: '
          '--config.crop=random_resized decodes a new crop') in caplog.text
  first = [b['image'] for b in pipeline.train_batches(0)]
  assert first[0].shape == (8, 16, 16, 3)
  again = [b['image'] for b in _pipeline(config).train_batches(0)]
  np.testing.assert_array_equal(np.stack(first), np.stack(again))
  later = [b['image'] for b in pipeline.train_batches(1)]
  other = [b['image'] for b in _pipeline(helpers.small_config(
      f'folder:{root}', crop='random_resized', augment='',
      seed=1)).train_batches(0)]
  assert not np.allclose(first[0], later[0])
  assert not np.allclose(first[0], other[0])


def test_each_example_is_cropped_by_its_position_and_the_epoch(tmp_path):
  root = _jpeg_folder(tmp_path)
  config = helpers.small_config(f'folder:{root}', crop='random_resized')
  pipeline = _pipeline(config)
  source = pipeline.source
  crop = pipeline._random_resized_crop(  # pylint: disable=protected-access
      input_pipeline.crop_seeds(config.seed, 1))
  got = _pairs(source.records('train').enumerate().shuffle(
      64, seed=5).map(crop))
  seed = tf.constant(input_pipeline.crop_seeds(config.seed, 1).astype(
      np.int64))
  by_file = {}
  for i, path in enumerate(source.files('train')):
    by_file[i] = preprocess.random_resized_crop(
        tf.io.read_file(path), tf.random.experimental.stateless_fold_in(
            seed, tf.constant(i, tf.int64)), 16, 3).numpy()
  # Shuffled, but each crop is the one of its example's own seed.
  matched = sorted(next(i for i, crop in by_file.items()
                        if np.array_equal(crop, image)) for image, _ in got)
  assert matched == list(range(len(by_file)))


def test_evaluation_and_predict_see_the_central_crop(tmp_path):
  root = _jpeg_folder(tmp_path)
  config = helpers.small_config(f'folder:{root}', crop='random_resized')
  pipeline = _pipeline(config)
  files = pipeline.source.files('validation')
  images = [image for image, _ in _pairs(
      pipeline.resized_examples('validation'))]
  for path, image in zip(files, images):
    with open(path, 'rb') as f:
      expected = preprocess.central_crop(tf.constant(f.read()), 16, 3).numpy()
    np.testing.assert_array_equal(image, expected)
    np.testing.assert_array_equal(
        predict.load_image(path, 16, 3, 'random_resized'), image)
  assert not np.array_equal(predict.load_image(files[0], 16, 3, 'none'),
                            images[0])


# ----------------------------------------------------------------------------
# A prepared TFDS dataset: its splits read as slices


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
      yield i, {'image': _smooth_noise(40, 50, seed=offset + i),
                'label': i % 3}


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  ImgclfTestImages(data_dir=data_dir).download_and_prepare()
  return data_dir


def test_tfds_indices_in_runs_are_read_as_slices(tfds_dir):
  config = helpers.small_config('imgclf_test_images', data_dir=tfds_dir,
                                validation_split='')
  source = sources.make_source(config)
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
  both = sources.make_source(summed)
  assert (both._slices('train[50:]+test', np.array([9, 10, 11]))  # pylint: disable=protected-access
          == 'train[59:60]+test[0:2]')
  _assert_examples_at(_pairs(both.examples('train', [9, 10, 11])),
                      _pairs(both.examples('train')), (9, 10, 11))


def test_tfds_sample_is_runs_of_records_drawn_with_the_fixed_seed(
    tfds_dir, monkeypatch):
  monkeypatch.setattr(sources, 'SAMPLE_BLOCKS', 4)
  config = helpers.small_config('imgclf_test_images', data_dir=tfds_dir,
                                validation_split='test',
                                normalization_sample_size=10)
  source = sources.make_source(config)
  sample = source.sample_indices('train', 10)
  # 4 runs of 3 records at slots drawn from the 20 slots of 3: 10 records.
  slots = np.sort(np.random.default_rng(sources.SAMPLE_SEED).choice(
      20, 4, replace=False))
  np.testing.assert_array_equal(
      sample, (slots[:, None] * 3 + np.arange(3)).ravel()[:10])
  assert source._slices('train', sample).count('+') <= 3  # pylint: disable=protected-access
  pipeline = _pipeline(config)
  everything = _pairs(input_pipeline.InputPipeline(
      source, config, {'mean': [0.0] * 3, 'std': [1.0] * 3}).resized_examples(
          'train'))
  mean, std = _stats([everything[i][0] for i in sample])
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


# ----------------------------------------------------------------------------
# Bad values, old checkpoints


@pytest.mark.parametrize('overrides, message', [
    ({'cache': 'yes'}, r"--config.cache='yes' is invalid: it must be True, "
                       r"False or 'auto'"),
    ({'cache_budget_gb': -1.0}, r'--config.cache_budget_gb=-1.0 is invalid'),
    ({'normalization_sample_size': 0},
     r'--config.normalization_sample_size=0 is invalid: it must be a whole '
     r'number >= 1'),
    ({'crop': 'center'}, r"--config.crop='center' is invalid: it must be one "
                         r"of \('none', 'random_resized'\)"),
    ({'crop': 'random_resized', 'cache': True},
     r"--config.cache=True does not combine with --config.crop="
     r"'random_resized'.*set --config.cache to 'auto' or False"),
    ({'crop': 'random_resized', 'oversample': True},
     r'--config.oversample=True does not combine with --config.crop'),
    ({'crop': 'random_resized', 'data_on_device': True},
     r'--config.data_on_device=True does not combine with --config.crop'),
    ({'normalization_mean': (0.5, 0.5, 0.5)},
     r'--config.normalization_mean=\(0.5, 0.5, 0.5\) and '
     r'--config.normalization_std=\(\): give both'),
    ({'normalization_mean': (0.5, 0.5), 'normalization_std': (0.2, 0.0)},
     r'--config.normalization_std=\(0.2, 0.0\) is invalid: it must be made of '
     r'numbers > 0'),
    ({'normalization_mean': (0.5,), 'normalization_std': (0.2,),
      'normalization': 'unit'},
     r"--config.normalization_mean=\(0.5,\) is given with "
     r"--config.normalization='unit'"),
    ({'normalization_mean': (float('nan'),), 'normalization_std': (0.2,)},
     r'--config.normalization_mean=\(nan,\) is invalid'),
])
def test_bad_values_are_refused(overrides, message):
  config = helpers.small_config('cifar10', **overrides)
  with pytest.raises(UserError, match=message):
    resolve.validate(config, 1)


def test_a_checkpoint_from_before_the_keys_evaluates(tmp_path):
  config = helpers.small_config('cifar10')
  saved = keys.to_dict(config)
  for key in ('crop', 'cache_budget_gb', 'normalization_sample_size',
              'normalization_mean', 'normalization_std'):
    del saved[key]
  saved['cache'] = True  # the old default, a bool
  merged = resolve.for_inference(saved, config, 'eval', 1)
  assert merged.cache == 'auto' and merged.crop == 'none'
  alone = resolve.for_inference(saved, None, 'predict', 1)
  assert alone.cache is True and alone.crop == 'none'
  assert alone.normalization_sample_size == 50_000


class _Recorder:
  """A model's init_from_data that keeps the images it is given."""

  def init_from_data(self, params, images):
    self.images = images
    return params


@pytest.mark.parametrize('cache', [True, False])
def test_init_from_data_gets_the_eval_images_of_its_sample_only(tmp_path,
                                                                 cache):
  root = helpers.make_image_folder(tmp_path, per_class=(9, 9, 9))
  config = helpers.small_config(f'folder:{root}', cache=cache,
                                eval_batch_size=4)
  pipeline = _pipeline(config)
  everything = np.concatenate([b['image']
                               for b in pipeline.eval_batches('train')])
  state = train_state_lib.create_train_state(
      jax.random.key(0), registry.create_model(specs.model_spec(config, 3)),
      (16, 16, 3), specs.optim_spec(config), steps_per_epoch=3)
  recorder = _Recorder()
  setup.init_from_data(recorder, state, pipeline, seed=3, num_images=10)
  chosen = np.sort(np.random.default_rng(3).choice(len(everything), 10,
                                                   replace=False))
  assert chosen.tolist() != list(range(10))  # not simply the first images
  np.testing.assert_array_equal(recorder.images, everything[chosen])
