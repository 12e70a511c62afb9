"""plots.py: each picture checked by its pixels at the places its layout
reports. The predictions grid and the confusion matrix are those of the
session's report run (`run`, tests/conftest.py)."""

import os

import matplotlib
import numpy as np
from PIL import Image
import pytest

from imgclf_jax.report import overfitting
from imgclf_jax.report import plots
from tests.helpers import hex_rgb as _hex_rgb
from tests.helpers import pixel as _pixel
from tests.helpers import read_csv as _csv


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_curves_mark_where_overfitting_starts(tmp_path):
  recs = [{'epoch': e, 'train_loss': 2 - 0.2 * e, 'validation_loss': l,
           'train_accuracy': 0.1 * e, 'validation_accuracy': 0.3}
          for e, l in zip(range(1, 9), [1.9, 1.5, 1.3, 1.25, 1.3, 1.4, 1.5,
                                        1.7])]
  epoch = overfitting.overfitting(recs)['epoch']
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
