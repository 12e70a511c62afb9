"""The insights of a trained checkpoint: eval report, pictures, predictions.

One small run on a generated folder; its `test` split has a few images
painted in another class's colour, so the model makes known mistakes.
Pictures are checked by their pixels at the places their layout reports.
"""

import csv
import glob
import json
import os

import matplotlib
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from imgclf_jax import checkpoints
from imgclf_jax import datasets
from imgclf_jax import evaluate
from imgclf_jax import input_pipeline
from imgclf_jax import plots
from imgclf_jax import predict
from imgclf_jax import report
from imgclf_jax import train
from imgclf_jax.errors import UserError
from tests import helpers

CLASSES = ['class_0', 'class_1', 'class_2']
# test-split images repainted in another class's colour: (class, index, as).
REPAINTED = [('class_0', 0, 1), ('class_0', 1, 1), ('class_0', 2, 2),
             ('class_2', 0, 0), ('class_2', 1, 0)]


def _paint(path, colour_index, seed):
  rng = np.random.default_rng(seed)
  noise = rng.integers(-40, 40, size=(20, 24, 3))
  pixels = np.clip(np.array(helpers.COLOURS[colour_index]) + noise, 0, 255)
  Image.fromarray(pixels.astype(np.uint8)).save(path)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  root = helpers.make_image_folder(tmp_path_factory.mktemp('data'),
                                   per_class=(12, 12, 12),
                                   splits=('train', 'test'), ext='png')
  for i, (cls, index, colour) in enumerate(REPAINTED):
    _paint(os.path.join(root, 'test', cls, f'{index:03d}.png'), colour, i)
  workdir = str(tmp_path_factory.mktemp('run'))
  config = helpers.small_config(f'folder:{root}', num_epochs=3, top_k=2,
                                report_images=6, augment='')
  train.train_and_evaluate(config, workdir)
  test_config = config.copy_and_resolve_references()
  test_config.eval_split = 'test'
  result = evaluate.evaluate_checkpoint(test_config, workdir)
  return root, workdir, config, result


def _csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def _pixel(png, x, y):
  return np.asarray(png)[int(y), int(x), :3].astype(int)


def _hex_rgb(colour):
  return np.array([int(v * 255) for v in matplotlib.colors.to_rgb(colour)])


# ----------------------------------------------------------------------------
# Evaluation report


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


def test_eval_loss_and_accuracy_are_the_training_loops(run):
  # The report's pass computes the same device-side sums as validation does.
  _, workdir, _, _ = run
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    last = [json.loads(line) for line in f][-1]
  result = evaluate.evaluate_checkpoint(None, workdir)
  assert result['split'] == 'validation'
  assert result['accuracy'] == last['validation_accuracy']
  np.testing.assert_allclose(result['loss'], last['validation_loss'], rtol=1e-6)


def test_predictions_grid_marks_exactly_the_wrong_ones(run):
  root, workdir, _, result = run
  entries = result['examples']['grid']
  tiles = result['layout']['grid']['tiles']
  rows = _csv(os.path.join(workdir, result['files']['predictions_csv']))
  assert len(entries) == len(tiles) == 6
  with Image.open(os.path.join(workdir, result['files']['grid'])) as png:
    assert png.size == (6 * 175 + 20, 255)
    image = np.asarray(png.convert('RGB'))
  red, green = (_hex_rgb(plots.WRONG_COLOUR),
                _hex_rgb(plots.RIGHT_COLOUR))
  for entry, (x0, y0, x1, y1) in zip(entries, tiles):
    row = rows[entry['index']]
    assert entry['correct'] == bool(int(row['correct']))
    assert entry['predicted'] == row['predicted'] and entry['true'] == row['true']
    # The frame just outside the image: red for a mistake, green otherwise.
    frame = _pixel(image, x0 - 1.5, (y0 + y1) / 2)
    expected = green if entry['correct'] else red
    assert np.abs(frame - expected).max() < 40, (entry, frame)
    # Inside: the image as a person sees it (its file's mean colour).
    inner = image[int(y0 + (y1 - y0) / 4):int(y1 - (y1 - y0) / 4),
                  int(x0 + (x1 - x0) / 4):int(x1 - (x1 - x0) / 4)]
    with Image.open(entry['file']) as original:
      colour = np.asarray(original.convert('RGB'), float).mean(axis=(0, 1))
    np.testing.assert_allclose(inner.reshape(-1, 3).mean(0), colour, atol=20)
  shown_wrong = [e for e in entries if not e['correct']]
  sample_wrong = [i for i in (e['index'] for e in entries)
                  if not int(rows[i]['correct'])]
  assert [e['index'] for e in shown_wrong] == sample_wrong
  del root


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


def test_confusion_matrix_png_shows_the_counts(run):
  _, workdir, _, result = run
  matrix = np.array(result['confusion_matrix'], float)
  normalized = matrix / matrix.sum(axis=1, keepdims=True)
  cmap = matplotlib.colormaps[plots.CONFUSION_CMAP]
  with Image.open(os.path.join(workdir, result['files']['confusion_matrix'])
                  ) as png:
    assert png.size == (1050, 660)
    image = np.asarray(png.convert('RGB'))
  for panel, values in (('counts', matrix / matrix.max()),
                        ('normalized', normalized)):
    cells = result['layout']['confusion_matrix'][panel]
    for i in range(3):
      for j in range(3):
        x0, y0, x1, y1 = cells[i][j]
        # Off-centre, away from the number written in the cell.
        got = _pixel(image, x0 + 0.15 * (x1 - x0), y0 + 0.15 * (y1 - y0))
        want = np.array(cmap(values[i, j])[:3]) * 255
        assert np.abs(got - want).max() <= 4, (panel, i, j, got, want)


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


def test_imbalance_warning_and_chart(tmp_path, caplog):
  root = helpers.make_image_folder(tmp_path / 'data', per_class=(40, 8, 40),
                                   size=(8, 8))
  config = helpers.small_config(f'folder:{root}')
  pipeline = input_pipeline.InputPipeline(datasets.make_source(config), config)
  with caplog.at_level('WARNING'):
    dist = report.write_class_distribution(pipeline, config,
                                                      str(tmp_path))
  assert dist['train'] == [36, 7, 36] and dist['validation'] == [4, 1, 4]
  assert dist['imbalance_ratio'] == pytest.approx(36 / 7) and dist['warning']
  assert dist['minority_classes'] == ['class_1']
  warning = [r.getMessage() for r in caplog.records
             if 'Class imbalance' in r.getMessage()]
  assert len(warning) == 1 and 'ratio 5.1' in warning[0]
  assert '--config.class_weights=balanced' in warning[0]
  _check_bars(str(tmp_path / 'class_distribution.png'), dist)


def test_overfitting_epoch():
  def records(val, tr):
    return [{'epoch': i + 1, 'validation_loss': v, 'train_loss': t}
            for i, (v, t) in enumerate(zip(val, tr))]
  falling = [2.0, 1.5, 1.2, 1.0, 0.9, 0.8]
  assert report.overfitting_epoch(
      records([1.9, 1.4, 1.2, 1.25, 1.4, 1.6], falling)) == 4
  # Still improving, or both losses rising (not overfitting): none.
  assert report.overfitting_epoch(
      records([1.9, 1.5, 1.3, 1.2, 1.1, 1.0], falling)) is None
  assert report.overfitting_epoch(
      records([1.9, 1.4, 1.5, 1.6], [2.0, 1.5, 1.6, 1.7])) is None
  assert report.overfitting_epoch(records([1.0], [1.0])) is None


def test_curves_mark_where_overfitting_starts(tmp_path):
  recs = [{'epoch': e, 'train_loss': 2 - 0.2 * e, 'validation_loss': l,
           'train_accuracy': 0.1 * e, 'validation_accuracy': 0.3}
          for e, l in zip(range(1, 9), [1.9, 1.5, 1.3, 1.25, 1.3, 1.4, 1.5,
                                        1.7])]
  epoch = report.overfitting_epoch(recs)
  assert epoch == 5
  layout = plots.plot_curves(recs, str(tmp_path / 'marked.png'), epoch)
  plots.plot_curves(recs, str(tmp_path / 'plain.png'))
  red = _hex_rgb(plots.OVERFIT_COLOUR)
  for name, xs in (('marked', layout['overfit_x']), ('plain', [])):
    with Image.open(tmp_path / f'{name}.png') as png:
      assert png.size == (1100, 400)
      image = np.asarray(png.convert('RGB')).astype(int)
    is_red = np.abs(image - red).max(axis=-1) < 60
    columns = np.flatnonzero(is_red.sum(axis=0) > 60)  # a dashed vertical line
    if name == 'plain':
      assert not len(columns)
      continue
    assert len(xs) == 2
    for x in xs:  # on both panels, where epoch 5 is
      assert np.min(np.abs(columns - x)) <= 1.5, (columns, x)


def test_best_checkpoint_is_kept_besides_the_latest(tmp_path):
  store = checkpoints.CheckpointStore(str(tmp_path), max_to_keep=2)
  accuracies = [0.5, 0.9, 0.6, 0.7, 0.65]
  for step, acc in enumerate(accuracies, start=1):
    store.save(step, {'w': np.full(3, step, np.float32)}, {'epoch': step},
               metrics={'validation_accuracy': acc})
  store.close()
  store = checkpoints.CheckpointStore(str(tmp_path), max_to_keep=2)
  assert store.steps() == [2, 4, 5]
  assert store.best_step() == 2
  assert store.restore_metadata('best') == (
      2, {'format_version': checkpoints.FORMAT_VERSION, 'epoch': 2})
  assert store.restore_metadata('latest')[0] == 5
  assert store.restore_metadata('4')[0] == 4
  with pytest.raises(UserError, match=r'--step=newest: use latest, best or a '
                     r'step number \(\[2, 4, 5\]\)'):
    store.restore_metadata('newest')
  store.close()


def test_eval_step_best_is_the_best_validation_accuracy(run):
  _, workdir, _, _ = run
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  best = max(records, key=lambda r: (r['validation_accuracy'], r['step']))
  result = evaluate.evaluate_checkpoint(None, workdir, step='best')
  assert result['step'] == best['step']
  assert result['accuracy'] == best['validation_accuracy']


# ----------------------------------------------------------------------------
# Predictions on new images


def test_predict_on_training_images_matches_eval(run):
  _, workdir, config, _ = run
  train_config = config.copy_and_resolve_references()
  train_config.eval_split = 'train'
  result = evaluate.evaluate_checkpoint(train_config, workdir)
  rows = {r['file']: r for r in _csv(
      os.path.join(workdir, result['files']['predictions_csv']))}
  chosen = sorted(rows)[::5]
  for path in chosen:
    out = predict.predict_images(None, workdir, path)
    (row,) = out['predictions']
    name, p = row['top_k'][0]
    assert name == rows[path]['predicted']
    assert p == pytest.approx(float(rows[path]['confidence']), abs=1e-5)
    assert rows[path]['top2'].split(':')[0] == row['top_k'][1][0]


def test_predict_any_image_kind_and_skips_unreadable_files(run, tmp_path,
                                                          capsys):
  _, workdir, _, _ = run
  red, blue = helpers.COLOURS[0], helpers.COLOURS[2]
  Image.new('RGBA', (61, 45), (*red, 255)).save(tmp_path / 'a_rgba.png')
  Image.new('RGB', (300, 200), blue).save(tmp_path / 'b_big.jpg')
  Image.new('L', (16, 16), 128).save(tmp_path / 'c_gray.png')
  Image.new('RGB', (16, 16), red).save(tmp_path / 'd.bmp')
  (tmp_path / 'e_broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 not a JPEG')
  (tmp_path / 'f_notes.txt').write_text('hello')
  out = predict.predict_images(None, workdir, str(tmp_path / '*'))
  printed = capsys.readouterr().out.splitlines()
  by_file = {os.path.basename(r['file']): r for r in out['predictions']}
  assert sorted(by_file) == ['a_rgba.png', 'b_big.jpg', 'c_gray.png', 'd.bmp']
  assert by_file['a_rgba.png']['top_k'][0][0] == 'class_0'
  assert by_file['d.bmp']['top_k'][0][0] == 'class_0'
  assert by_file['b_big.jpg']['top_k'][0][0] == 'class_2'
  for r in out['predictions']:
    assert len(r['top_k']) == 2  # config.top_k of the checkpoint
    assert r['top_k'][0][1] >= r['top_k'][1][1]
  assert sorted(os.path.basename(s['file']) for s in out['skipped']) == [
      'e_broken.jpg', 'f_notes.txt']
  # One printed line per file, in order; the skipped ones say so by name.
  assert len(printed) == 6
  assert printed[0].startswith(str(tmp_path / 'a_rgba.png') + '\tclass_0 ')
  assert printed[4].startswith(str(tmp_path / 'e_broken.jpg') + '\tskipped: ')
  rows = _csv(out['csv'])
  assert out['csv'] == os.path.join(workdir, 'predictions_step12.csv')
  assert [os.path.basename(r['file']) for r in rows] == [
      'a_rgba.png', 'b_big.jpg', 'c_gray.png', 'd.bmp', 'e_broken.jpg',
      'f_notes.txt']
  assert rows[0]['class_1'] == 'class_0' and float(rows[0]['prob_1']) > 0.5
  assert rows[4]['class_1'] == '' and 'cannot read image' in rows[4]['error']


def test_images_naming_a_file_with_glob_characters(tmp_path):
  (tmp_path / 'photo[1].png').write_bytes(b'')
  (tmp_path / 'photo1.png').write_bytes(b'')
  assert predict.image_paths(str(tmp_path / 'photo[1].png')) == [
      str(tmp_path / 'photo[1].png')]  # the file itself, not the glob's match
  assert predict.image_paths(str(tmp_path / 'photo[0-9].png')) == [
      str(tmp_path / 'photo1.png')]


def test_predict_errors(run, tmp_path):
  _, workdir, _, _ = run
  with pytest.raises(UserError, match=r'no file matches it as a glob'):
    predict.predict_images(None, workdir, str(tmp_path / 'nothing*.jpg'))
  (tmp_path / 'bad.png').write_bytes(b'not a png')
  with pytest.raises(UserError, match=r'none of the 1 file\(s\).*bad\.png'):
    predict.predict_images(None, workdir, str(tmp_path / 'bad.png'))
  with pytest.raises(UserError, match=r'no checkpoint in'):
    predict.predict_images(None, str(tmp_path / 'empty'),
                           str(tmp_path / 'bad.png'))
