"""The class-imbalance remedies, on a deliberately imbalanced generated folder.

Each remedy must change what it claims to: the minority class's share of the
training batches (oversampling), the weight of its loss terms (class
weights), and only its images' augmentation (minority augmentation).
"""

import numpy as np
import pytest

from imgclf_jax.config import specs
from imgclf_jax.data import imbalance
from imgclf_jax.errors import UserError
from imgclf_jax.modes import train
from tests import helpers

# 36, 36 and 7 training images once 10% of each class is held out.
PER_CLASS = (40, 40, 8)
MINORITY = 2


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return helpers.make_image_folder(tmp_path_factory.mktemp('imbalanced'),
                                   per_class=PER_CLASS, size=(8, 8))


def _pipeline(folder, **overrides):
  config = helpers.small_config(f'folder:{folder}', augment='', image_size=8,
                                **overrides)
  return helpers.make_pipeline(config)


def _labels(batches):
  return np.concatenate([b['label'].reshape(-1, b['label'].shape[-1])
                         for b in batches]).argmax(-1)


def test_counts_ratio_and_minority_classes(folder):
  pipeline = _pipeline(folder)
  counts = pipeline.class_counts('train')
  assert counts.tolist() == [36, 36, 7]
  assert pipeline.class_counts('validation').tolist() == [4, 4, 1]
  assert imbalance.imbalance_ratio(counts) == pytest.approx(36 / 7)
  assert imbalance.minority_classes(counts, 0.5).tolist() == [False, False,
                                                              True]


def test_oversampling_evens_out_the_minority_share(folder):
  plain = _pipeline(folder)
  over = _pipeline(folder, oversample=True)
  assert over.steps_per_epoch == plain.steps_per_epoch == 79 // 8
  epochs = range(3)
  plain_labels = np.concatenate([_labels(plain.train_batches(e))
                                 for e in epochs])
  over_labels = np.concatenate([_labels(over.train_batches(e))
                                for e in epochs])
  assert len(plain_labels) == len(over_labels) == 3 * 9 * 8
  plain_share = np.bincount(plain_labels, minlength=3) / len(plain_labels)
  over_share = np.bincount(over_labels, minlength=3) / len(over_labels)
  # Without the remedy the minority class is ~7/79 of every batch; with it,
  # every class is about a third.
  assert plain_share[MINORITY] < 0.1
  np.testing.assert_allclose(over_share, 1 / 3, atol=0.08)
  # Still fixed by seed and epoch (resumable), and different per epoch.
  first = [b['image'] for b in over.train_batches(0)]
  again = [b['image'] for b in _pipeline(folder, oversample=True
                                         ).train_batches(0)]
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[0], next(over.train_batches(1))['image'])


@pytest.mark.parametrize('cache', [True, False])
def test_oversampling_repeats_minority_images_rather_than_copying(folder,
                                                                   cache):
  # cache=False: each class stream decodes only its own class's files.
  over = _pipeline(folder, oversample=True, cache=cache)
  images = np.concatenate([b['image'].reshape(-1, 8, 8, 3)
                           for b in over.train_batches(0)])
  labels = _labels(over.train_batches(0))
  minority = images[labels == MINORITY]
  drawn = {m.tobytes() for m in minority}
  # The minority class's 7 training images, as the plain pipeline feeds them
  # (augment is off, so a drawn image is byte-equal to its source).
  plain = _pipeline(folder)
  plain_images = np.concatenate([b['image'].reshape(-1, 8, 8, 3)
                                 for b in plain.eval_batches('train')])
  plain_labels = np.concatenate(
      [b['label'].argmax(-1) for b in plain.eval_batches('train')])
  originals = {m.tobytes() for m in plain_images[plain_labels == MINORITY]}
  assert len(originals) == 7
  # ~24 draws, each one of the 7 real images: repeated, none made up.
  # (Each pass over the 7 shuffles all of them, and > 14 draws make two.)
  assert len(minority) > 14 and drawn == originals


def test_class_weights_parse():
  names = ('cat', 'dog', 'bird')
  assert imbalance.parse_class_weights('none', names) is None
  assert imbalance.parse_class_weights('balanced', names) == 'balanced'
  np.testing.assert_array_equal(
      imbalance.parse_class_weights('1, 2, 0.5', names), [1, 2, 0.5])
  np.testing.assert_array_equal(
      imbalance.parse_class_weights('bird=4', names), [1, 1, 4])
  for bad, message in (('1,2', r'gives 2 weights for the 3 classes'),
                       ('fish=2', r"\['fish'\] not among the classes"),
                       ('cat=2,3', r'is invalid'),
                       ('1,-1,1', r'finite and >= 0'),
                       ('0,0,0', r'every weight is 0'),
                       ('heavy', r'is invalid')):
    with pytest.raises(UserError, match=message):
      imbalance.parse_class_weights(bad, names)


def test_balanced_weights_put_equal_total_weight_on_every_class(folder):
  pipeline = _pipeline(folder, class_weights='balanced')
  weights = pipeline.loss_weights()
  np.testing.assert_allclose(weights, 79 / (3 * np.array([36, 36, 7])),
                             rtol=1e-6)
  batches = list(pipeline.train_batches(0))
  labels = _labels(batches)
  batch_weights = np.concatenate([b['weight'].ravel() for b in batches])
  # Every example carries its class's weight ...
  np.testing.assert_allclose(batch_weights, weights[labels], rtol=1e-6)
  # ... so a minority example's loss term counts 36/7 times a majority one's.
  assert batch_weights[labels == MINORITY][0] / batch_weights[labels == 0][
      0] == pytest.approx(36 / 7)
  # Explicit weights, and none without the key.
  explicit = _pipeline(folder, class_weights='class_2=5')
  batch = next(explicit.train_batches(0))
  np.testing.assert_allclose(
      batch['weight'].ravel(),
      np.where(_labels([batch]) == MINORITY, 5.0, 1.0))
  assert 'weight' not in next(_pipeline(folder).train_batches(0))


def test_minority_augment_changes_only_minority_images(folder):
  plain = list(_pipeline(folder).train_batches(0))
  strong = list(_pipeline(folder, minority_augment='shift,brightness',
                          minority_augment_scale=3.0).train_batches(0))
  labels = _labels(plain)
  np.testing.assert_array_equal(labels, _labels(strong))  # same order
  a = np.concatenate([b['image'].reshape(-1, 8, 8, 3) for b in plain])
  b = np.concatenate([b['image'].reshape(-1, 8, 8, 3) for b in strong])
  changed = np.abs(a - b).reshape(len(a), -1).max(axis=1) > 1e-6
  assert (labels == MINORITY).any()
  np.testing.assert_array_equal(changed, labels == MINORITY)
  strong = specs.minority_augment_spec(helpers.small_config(
      'x', minority_augment='shift', minority_augment_scale=3.0))
  assert strong.names == ('shift',)
  assert strong.shift_fraction == pytest.approx(0.3)
  assert strong.rotation_degrees == pytest.approx(45.0)


@pytest.mark.parametrize('overrides, message', [
    ({'class_weights': '1,2'}, r'class_weights=.*gives 2 weights for the 3'),
    ({'class_weights': 'cat=2'}, r"\['cat'\] not among the classes"),
    ({'minority_augment': 'flip,blur'},
     r"--config.minority_augment='flip,blur': unknown augmentation"),
    ({'minority_augment': 'zoom', 'minority_augment_scale': 12.0},
     r'minority_augment_scale=12.0 is invalid.*zoom_range'),
    ({'minority_fraction': 0.0}, r'--config.minority_fraction=0.0'),
    ({'top_k': 0}, r'--config.top_k=0 is invalid'),
])
def test_invalid_imbalance_keys_stop_before_anything_is_written(
    folder, tmp_path, overrides, message):
  config = helpers.small_config(f'folder:{folder}', **overrides)
  with pytest.raises(UserError, match=message):
    train.train_and_evaluate(config, str(tmp_path))
  assert not list(tmp_path.iterdir())
