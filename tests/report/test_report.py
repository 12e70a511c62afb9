"""eval_report.py: the evaluation report's numbers, galleries and TensorBoard
summaries, the class distribution before training, the overfitting epoch.

Most tests read the session's report run (`run`, tests/conftest.py): one small
run on a generated folder whose `test` split has a few images painted in
another class's colour, so the model makes known mistakes. Pictures are
checked by their pixels at the places their layout reports.
"""

import glob
import json
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from imgclf_jax.report import class_distribution
from imgclf_jax.report import eval_report
from imgclf_jax.report import overfitting
from imgclf_jax.report import plots
from tests import helpers
from tests.helpers import CLASSES
from tests.helpers import REPAINTED
from tests.helpers import hex_rgb as _hex_rgb
from tests.helpers import pixel as _pixel
from tests.helpers import read_csv as _csv

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ----------------------------------------------------------------------------
# Evaluation report


@pytest.mark.slow
def test_report_numbers_agree_with_each_other(run):
  _, workdir, _, result = run
  assert result['split'] == 'test' and result['num_examples'] == 36
  matrix = np.array(result['confusion_matrix'])
  assert matrix.shape == (3, 3) and matrix.sum() == 36
  assert matrix.sum(axis=1).tolist() == [12, 12, 12]
  # The repainted images are the mistakes the model must make.
  assert matrix[0, 1] >= 2 and matrix[2, 0] >= 2
  for i, name in enumerate(CLASSES):
    row = result['per_class'][name]
    assert row['support'] == 12
    assert row['recall'] == pytest.approx(matrix[i, i] / 12)
    assert row['precision'] == pytest.approx(matrix[i, i] / matrix[:, i].sum())
    p, r = row['precision'], row['recall']
    assert row['f1'] == pytest.approx(2 * p * r / (p + r))
  assert result['accuracy'] == pytest.approx(np.trace(matrix) / 36)
  assert result['macro_avg']['recall'] == pytest.approx(
      np.mean([result['per_class'][n]['recall'] for n in CLASSES]))
  # Per-example CSV: one row per example, consistent with the matrix.
  rows = _csv(os.path.join(workdir, result['files']['predictions_csv']))
  assert len(rows) == 36
  assert sum(int(r['correct']) for r in rows) == np.trace(matrix)
  for r in rows:
    assert os.path.isfile(r['file'])
    assert r['true'] == os.path.basename(os.path.dirname(r['file']))
  top2 = np.mean([r['true'] in (r['top1'].split(':')[0],
                                r['top2'].split(':')[0]) for r in rows])
  assert result['top_k'] == 2
  assert result['top_k_accuracy'] == pytest.approx(top2)
  assert result['top_k_accuracy'] >= result['accuracy']
  repainted = {os.path.join(run[0], 'test', c, f'{i:03d}.png'): CLASSES[k]
               for c, i, k in REPAINTED}
  predicted = {r['file']: r['predicted'] for r in rows}
  assert sum(predicted[f] == as_class for f, as_class in repainted.items()) >= 4
  # The JSON on disk is the returned result, less the pictures' layouts
  # (for tests, not users).
  with open(os.path.join(workdir, 'eval_test_step12.json')) as f:
    written = json.load(f)
  assert 'layout' not in written
  assert written == json.loads(json.dumps(
      {k: v for k, v in result.items() if k != 'layout'}))


def test_top_k_accuracy_is_na_when_every_class_is_in_the_top_k():
  # 3 classes: top-2 accuracy means something, top-3 (or top_k=5, the
  # default, capped at 3) is always 1.
  probs = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]])
  outputs = {'probs': probs, 'label': np.array([1, 0, 2]),
             'predicted': probs.argmax(1)}
  two = eval_report.build(outputs, CLASSES, 2)
  assert two['top_k'] == 2 and two['top_k_accuracy'] == pytest.approx(2 / 3)
  for top_k in (3, 5):
    report = eval_report.build(outputs, CLASSES, top_k)
    assert report['top_k'] == 3 and report['top_k_accuracy'] is None
    table = eval_report.format_table(report, 0.0, 1.5)
    assert table.splitlines()[-1] == (
        'accuracy 0.0000, loss 1.5000, top-3 accuracy n/a (top_k=3: every '
        'class is in the top 3), 3 examples')


@pytest.mark.slow
def test_galleries_of_confident_mistakes_and_unsure_right_answers(run):
  _, workdir, _, result = run
  rows = _csv(os.path.join(workdir, result['files']['predictions_csv']))
  confidence = np.array([float(r['confidence']) for r in rows])
  wrong = [i for i, r in enumerate(rows) if not int(r['correct'])]
  right = [i for i, r in enumerate(rows) if int(r['correct'])]
  mistakes = result['examples']['confident_mistakes']
  unsure = result['examples']['unsure_correct']
  # The galleries hold the most confident wrong / least confident right
  # examples, in that order (compared by confidence: ties may go either way).
  assert set(e['index'] for e in mistakes) <= set(wrong)
  assert set(e['index'] for e in unsure) <= set(right)
  assert [confidence[e['index']] for e in mistakes] == sorted(
      confidence[wrong], reverse=True)[:6]
  assert [confidence[e['index']] for e in unsure] == sorted(
      confidence[right])[:6]
  assert all(not e['correct'] for e in mistakes)
  assert all(e['correct'] for e in unsure)
  for e in mistakes + unsure:
    assert e['confidence'] == pytest.approx(confidence[e['index']], abs=1e-6)
  for name, entries, colour in (
      ('confident_mistakes', mistakes, plots.WRONG_COLOUR),
      ('unsure_correct', unsure, plots.RIGHT_COLOUR)):
    tiles = result['layout'][name]['tiles']
    assert len(tiles) == len(entries) > 0
    with Image.open(os.path.join(workdir, result['files'][name])) as png:
      assert png.size == (len(entries) * 175 + 20, 255)
      image = np.asarray(png.convert('RGB'))
    for x0, y0, x1, y1 in tiles:
      frame = _pixel(image, x0 - 1.5, (y0 + y1) / 2)
      assert np.abs(frame - _hex_rgb(colour)).max() < 40


@pytest.mark.slow
def test_report_goes_to_tensorboard(run):
  _, workdir, _, result = run
  events = glob.glob(os.path.join(workdir, 'eval_test', 'events.out.*'))
  assert events
  tags = {}
  for path in events:
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags[value.tag] = (event.step, tf.make_ndarray(value.tensor))
  assert {step for step, _ in tags.values()} == {result['step']}
  per_class = result['per_class']
  for tag, want in (('accuracy', result['accuracy']),
                    ('loss', result['loss']),
                    ('top_2_accuracy', result['top_k_accuracy']),
                    ('recall/class_0', per_class['class_0']['recall']),
                    ('precision/class_2', per_class['class_2']['precision'])):
    assert float(tags[tag][1]) == pytest.approx(want, rel=1e-6), tag
  # Each picture is the report's PNG: TensorBoard's image summary holds
  # [width, height, encoded image].
  for name in ('confusion_matrix', 'grid', 'confident_mistakes'):
    width, height, encoded = tags[name][1]
    with Image.open(os.path.join(workdir, result['files'][name])) as png:
      want = np.asarray(png.convert('RGB'))
    assert (int(width), int(height)) == (want.shape[1], want.shape[0])
    np.testing.assert_array_equal(tf.io.decode_png(encoded).numpy()[..., :3],
                                  want)


# ----------------------------------------------------------------------------
# Training insights


@pytest.mark.slow
def test_class_distribution_is_written_before_training(run, tmp_path):
  _, workdir, _, _ = run
  with open(os.path.join(workdir, 'class_distribution.json')) as f:
    dist = json.load(f)
  assert dist['class_names'] == CLASSES and 'layout' not in dist
  assert dist['train'] == [11, 11, 11] and dist['validation'] == [1, 1, 1]
  assert dist['imbalance_ratio'] == 1.0 and not dist['warning']
  # The chart is the one plots.py draws for these counts (whose layout says
  # where its bars are).
  again = str(tmp_path / 'again.png')
  layout = plots.plot_class_distribution(
      CLASSES, {'train': dist['train'], 'validation': dist['validation']},
      again, title='examples per class (train imbalance ratio 1.0)')
  with Image.open(again) as a, Image.open(
      os.path.join(workdir, 'class_distribution.png')) as b:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  _check_bars(again, {**dist, 'layout': layout})


def _check_bars(path, dist):
  with Image.open(path) as png:
    assert png.size == (600, 450)
    image = np.asarray(png.convert('RGB'))
  for s, split in enumerate(('train', 'validation')):
    colour = _hex_rgb(plots.SPLIT_COLOURS[s])
    boxes = dist['layout']['bars'][split]
    heights = np.array([y1 - y0 for _, y0, _, y1 in boxes])
    np.testing.assert_allclose(heights / heights.max(),
                               np.array(dist[split]) / max(dist[split]),
                               atol=0.01)
    for x0, y0, x1, y1 in boxes:
      if y1 - y0 > 4:  # drawn in its split's colour, background above it
        assert np.abs(_pixel(image, (x0 + x1) / 2, y0 + 2) - colour).max() < 8
        assert _pixel(image, (x0 + x1) / 2, y0 - 3).min() > 200


def test_a_class_without_support_is_na_and_left_out_of_the_averages():
  # class_2 has no example in the split; the model predicts it once
  # (a class_0 image), and never class_3.
  labels = [0, 0, 0, 1, 1, 0]
  predicted = [0, 0, 1, 1, 1, 2]
  probs = np.eye(4)[predicted]
  names = ['class_0', 'class_1', 'class_2', 'class_3']
  numbers = eval_report.build({'label': np.array(labels),
                          'predicted': np.array(predicted), 'probs': probs},
                         names, top_k=1)
  per_class = numbers['per_class']
  assert per_class['class_2'] == {'precision': 0.0, 'recall': None,
                                  'f1': None, 'support': 0}
  assert per_class['class_3'] == {'precision': None, 'recall': None,
                                  'f1': None, 'support': 0}
  assert numbers['classes_without_support'] == ['class_2', 'class_3']
  # Macro: the mean over class_0 (recall 2/4) and class_1 (recall 1) only.
  assert numbers['macro_avg']['recall'] == pytest.approx(0.75)
  assert numbers['macro_avg']['precision'] == pytest.approx((1 + 2 / 3) / 2)
  # Weighted recall is the accuracy (4 of 6).
  assert numbers['weighted_avg']['recall'] == pytest.approx(4 / 6)
  table = eval_report.format_table(numbers, accuracy=0.5, loss=1.0).splitlines()
  assert table[3].split() == ['class_2', '0.0000', 'n/a', 'n/a', '0']
  assert table[4].split() == ['class_3', 'n/a', 'n/a', 'n/a', '0']
  assert table[-1] == ('no examples of class_2, class_3 in this split: n/a, '
                       'left out of the averages')
  json.dumps(numbers, allow_nan=False)  # n/a is JSON null


def test_a_class_without_validation_examples_is_warned_before_training(
    tmp_path, caplog):
  # One image in class_1's folder: the held-out validation gets none of it.
  root = helpers.make_image_folder(tmp_path / 'data', per_class=(10, 1, 10),
                                   size=(8, 8))
  config = helpers.small_config(f'folder:{root}')
  pipeline = helpers.make_pipeline(config)
  with caplog.at_level('WARNING'):
    dist = class_distribution.write_class_distribution(pipeline, str(tmp_path))
  assert dist['validation'] == [1, 0, 1]
  assert dist['classes_without_validation'] == ['class_1']
  warnings = [r.getMessage() for r in caplog.records
              if 'No validation examples' in r.getMessage()]
  assert warnings == [
      'No validation examples of 1 class(es): class_1 (1 training). '
      'Validation says nothing about them, and the eval report marks them '
      'n/a (left out of the macro averages). Give each class at least 2 '
      'images (a folder holds out validation_fraction of each, at least one '
      'where it has 2), or images in its validation folder.']
  with open(tmp_path / 'class_distribution.json') as f:
    assert json.load(f)['classes_without_validation'] == ['class_1']


def test_imbalance_warning_and_chart(tmp_path, caplog):
  root = helpers.make_image_folder(tmp_path / 'data', per_class=(40, 8, 40),
                                   size=(8, 8))
  config = helpers.small_config(f'folder:{root}')
  pipeline = helpers.make_pipeline(config)
  with caplog.at_level('WARNING'):
    dist = class_distribution.write_class_distribution(pipeline,
                                                      str(tmp_path))
  assert dist['train'] == [36, 7, 36] and dist['validation'] == [4, 1, 4]
  assert dist['imbalance_ratio'] == pytest.approx(36 / 7) and dist['warning']
  assert dist['minority_classes'] == ['class_1']
  warning = [r.getMessage() for r in caplog.records
             if 'Class imbalance' in r.getMessage()]
  assert len(warning) == 1 and 'ratio 5.1' in warning[0]
  assert '--config.class_weights=balanced' in warning[0]
  _check_bars(str(tmp_path / 'class_distribution.png'), dist)


def _records(val, train):
  return [{'epoch': i + 1, 'validation_loss': v, 'train_loss': t}
          for i, (v, t) in enumerate(zip(val, train))]


def _docs_metrics(name):
  with open(os.path.join(ROOT, 'docs', name)) as f:
    return [json.loads(line) for line in f]


def test_no_overfitting_on_a_noisy_but_improving_run(caplog):
  # The 20-epoch CIFAR-10 run of docs/results.md: validation loss wobbles
  # (0.852 at epoch 14, 0.907 at 15, still 0.880 at 20) while both curves
  # improve; the raw validation loss stays above its epoch-14 minimum for the
  # last six epochs and the gap (validation minus training loss) widens.
  records = _docs_metrics('cifar10_jpeg_metrics.jsonl')
  assert len(records) == 20 and min(
      records, key=lambda r: r['validation_loss'])['epoch'] == 14
  assert all(r['validation_loss'] > records[13]['validation_loss']
             for r in records[14:])
  with caplog.at_level('INFO'):
    assert overfitting.log_overfitting(records) is None
  assert 'No overfitting seen' in caplog.text
  for n in range(2, 21):  # nor at any point of that run
    assert overfitting.overfitting(records[:n]) is None, n


def test_overfitting_on_a_run_that_overfits(caplog):
  # docs/results.md: 2,000 CIFAR-10 images without augmentation or dropout.
  # Validation loss is lowest at epoch 5 (1.457), 1.460 at 6, then climbs
  # (1.506, 1.585, 1.788, ...) while training loss falls to 0.001.
  records = _docs_metrics('cifar10_subset_overfitting_metrics.jsonl')
  with caplog.at_level('INFO'):
    assert overfitting.log_overfitting(records) == 7
  found = overfitting.overfitting(records)
  assert found['best_epoch'] == 5 and found['end_epoch'] == 40
  assert found['epochs'] == 34 and found['kind'] == 'overfitting'
  # The validation accuracy stalls as the loss climbs (53.5% at epoch 6,
  # 51% at 8 and 9): smoothed, its best before epoch 7 and its value at 9.
  assert found['validation_accuracy'] == pytest.approx([0.5133, 0.5033],
                                                       abs=1e-4)
  assert ('Overfitting starts at epoch 7: the validation loss (mean of 3 '
          'epochs) rises (1.4602 at epoch 5 -> 3.1754 at epoch 40) while the '
          'training loss falls (0.9355 -> 0.0012) and the validation '
          'accuracy stalls (51.3% before epoch 7, 50.3% at epoch 9). '
          '--step=best is the epoch of the best validation accuracy.') in (
              caplog.messages)
  # Seen as soon as the trend has lasted OVERFIT_PATIENCE epochs.
  assert overfitting.overfitting(records[:8]) is None
  assert overfitting.overfitting(records[:10])['epoch'] == 7


def test_a_rising_validation_loss_with_a_rising_accuracy_is_over_confidence(
    caplog):
  # Issue 23's run: 5 epochs on 3 x 300 photos, validation accuracy up every
  # epoch to 61.1% (the best epoch, 5), the validation loss up from epoch 2
  # while the training loss falls. Not overfitting (no red line on
  # curves.png), and the log does not say so.
  records = [{'epoch': e, 'train_loss': t, 'validation_loss': v,
              'validation_accuracy': a}
             for e, t, v, a in zip(range(1, 6), [1.05, 0.85, 0.7, 0.55, 0.45],
                                   [0.95, 0.97, 1.02, 1.08, 1.15],
                                   [0.45, 0.5, 0.55, 0.58, 0.611])]
  with caplog.at_level('INFO'):
    assert overfitting.log_overfitting(records) is None
  assert overfitting.overfitting(records)['kind'] == 'over-confidence'
  assert caplog.messages == [
      'Over-confidence from epoch 2, not overfitting: the validation loss '
      '(mean of 3 epochs) rises (0.9600 at epoch 1 -> 1.1150 at epoch 5) '
      'while the validation accuracy still improves (47.5% before epoch 2, '
      '58.0% at epoch 4).']
  # Where the accuracy then stalls while the loss goes on rising, that is
  # overfitting, from the first epoch of a stretch at whose end the
  # accuracy (mean of 3 epochs) is no better than before it: epoch 6 (59.0%
  # at epoch 8, 59.7% at epoch 5); not 4 or 5 (60.0% at 6, 59.7% at 7).
  stalled = records + [
      {'epoch': e, 'train_loss': t, 'validation_loss': v,
       'validation_accuracy': a}
      for e, t, v, a in zip(range(6, 10), [0.35, 0.28, 0.2, 0.15],
                            [1.25, 1.35, 1.5, 1.6], [0.6, 0.59, 0.6, 0.58])]
  found = overfitting.overfitting(stalled)
  assert (found['kind'], found['epoch']) == ('overfitting', 6)


def test_overfitting_needs_a_sustained_rise_and_a_widening_gap():
  falling = [2.0, 1.6, 1.3, 1.1, 0.95, 0.85, 0.75, 0.7, 0.65, 0.6]
  rising = [1.9, 1.4, 1.2, 1.15, 1.3, 1.45, 1.6, 1.8, 2.0, 2.2]
  assert overfitting.overfitting(_records(rising, falling))['epoch'] == 5
  # One epoch up, then improving again: no trend.
  wobble = [1.9, 1.4, 1.2, 1.1, 1.3, 1.0, 0.95, 0.9, 0.88, 0.85]
  assert overfitting.overfitting(_records(wobble, falling)) is None
  # Both losses rising together (unstable training): no widening gap.
  both = [v - 0.1 for v in rising]
  assert overfitting.overfitting(_records(rising, both)) is None
  # Too few epochs to see a trend.
  assert overfitting.overfitting(_records(rising[:3], falling[:3])) is None
