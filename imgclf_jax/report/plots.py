"""Every picture the program writes: training curves, class distribution,
confusion matrix, image grids.

matplotlib with the Agg backend (no display). Every function writes one PNG
and returns its layout in image pixels (origin top-left, x right, y down):
where the marks, bars, cells or image tiles are, so that a reader (or a test)
can find what is drawn where. Images are shown as uint8 pixels,
un-normalised, as a person sees them.
"""

import os

import matplotlib
import numpy as np

from imgclf_jax import whole_file

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

DPI = 100
RIGHT_COLOUR = '#00a000'   # frame of a correct prediction
WRONG_COLOUR = '#e00000'   # frame of a mistake
OVERFIT_COLOUR = '#ff0000' # the line where overfitting starts
CONFUSION_CMAP = 'Blues'
SPLIT_COLOURS = ('#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd')
WRONG_MARK = '\u2717'      # ✗ (DejaVu Sans has it; the emoji ❌ it has not)


def _box(fig, artist):
  """An artist's extent as [x0, y0, x1, y1] image pixels (y down)."""
  bbox = artist.get_window_extent()
  height = fig.get_size_inches()[1] * fig.dpi
  return [float(bbox.x0), float(height - bbox.y1), float(bbox.x1),
          float(height - bbox.y0)]


def _finish(fig, path: str, layout_fn, title: str = '') -> dict:
  """Lays `fig` out (with its `title`), measures it with layout_fn(fig) and
  writes it to `path` (whole, or a UserError: whole_file.py); returns the
  layout."""
  try:
    if title:
      fig.suptitle(title)
    fig.tight_layout()
    fig.canvas.draw()
    layout = layout_fn(fig)
    with whole_file.replacing(path, 'wb') as f:
      fig.savefig(f, dpi=DPI,
                  format=os.path.splitext(path)[1][1:] or 'png')
  finally:
    plt.close(fig)
  return layout


def plot_curves(records: list[dict], path: str, overfit_epoch=None) -> dict:
  """Accuracy and loss per epoch, train vs validation, side by side.

  With `overfit_epoch`, a red dashed line marks where overfitting starts on
  both panels. Returns {'overfit_x': [x pixel of that line per panel]}.
  """
  epochs = [r['epoch'] for r in records]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=DPI)
  for ax, metric in zip(axes, ('accuracy', 'loss')):
    ax.plot(epochs, [r[f'train_{metric}'] for r in records], 'o-',
            label='train')
    ax.plot(epochs, [r[f'validation_{metric}'] for r in records], 's-',
            label='validation')
    ax.set_xlabel('epoch')
    ax.set_ylabel(metric)
    ax.set_title(f'{metric}: train vs validation')
    ax.grid(alpha=0.3)
    if overfit_epoch is not None:
      ax.axvline(overfit_epoch, color=OVERFIT_COLOUR, linestyle='--',
                 linewidth=1.5, label=f'overfitting from epoch {overfit_epoch}')
    ax.legend()
  return _finish(fig, path, lambda fig: {'overfit_x': [
      float(ax.transData.transform((overfit_epoch, 0))[0]) for ax in axes]
      if overfit_epoch is not None else []})


def plot_class_distribution(class_names, counts: dict, path: str,
                            title: str = 'examples per class') -> dict:
  """Grouped bars: examples per class of each split in `counts` {split: [K]}.

  Returns {'bars': {split: [box per class]}}.
  """
  k = len(class_names)
  splits = list(counts)
  fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * k * len(splits) + 2), 4.5),
                         dpi=DPI)
  width = 0.8 / len(splits)
  x = np.arange(k)
  containers = {}
  for i, split in enumerate(splits):
    values = np.asarray(counts[split])
    containers[split] = ax.bar(
        x + (i - (len(splits) - 1) / 2) * width, values, width,
        label=f'{split} ({int(values.sum())})',
        color=SPLIT_COLOURS[i % len(SPLIT_COLOURS)])
  ax.set_xticks(x)
  ax.set_xticklabels(class_names, rotation=45 if k > 6 else 0,
                     ha='right' if k > 6 else 'center')
  ax.set_ylabel('examples')
  ax.set_title(title)
  ax.grid(axis='y', alpha=0.3)
  # Head room, so the legend covers no bar.
  ax.set_ylim(0, 1.3 * max(max(np.max(v) for v in counts.values()), 1))
  ax.legend(loc='upper right')
  return _finish(fig, path, lambda fig: {'bars': {
      split: [_box(fig, bar) for bar in container]
      for split, container in containers.items()}})


def plot_confusion_matrix(matrix, class_names, path: str,
                          title: str = '') -> dict:
  """Counts and row-normalised (per true class) confusion matrices.

  Rows are the true classes, columns the predicted ones. Returns
  {'counts': cell boxes [K][K], 'normalized': cell boxes [K][K]}.
  """
  matrix = np.asarray(matrix, np.int64)
  k = len(class_names)
  rows = matrix.sum(axis=1, keepdims=True)
  normalized = np.divide(matrix, rows, out=np.zeros(matrix.shape),
                         where=rows > 0)
  side = max(4.0, 0.55 * k + 2.0)
  fig, axes = plt.subplots(1, 2, figsize=(2 * side + 2.5, side + 2.6), dpi=DPI)
  panels = (('counts', matrix, matrix.max() or 1, 'd'),
            ('normalized', normalized, 1.0, '.2f'))
  for ax, (name, values, vmax, fmt) in zip(axes, panels):
    ax.imshow(values, cmap=CONFUSION_CMAP, vmin=0, vmax=vmax,
              interpolation='nearest')
    if k <= 30:
      for i in range(k):
        for j in range(k):
          ax.text(j, i, format(values[i, j], fmt), ha='center', va='center',
                  fontsize=8 if k > 10 else 9,
                  color='white' if values[i, j] > 0.6 * vmax else 'black')
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(class_names, rotation=45, ha='right')
    ax.set_yticklabels(class_names)
    ax.set_xlabel('predicted class')
    ax.set_ylabel('true class')
    ax.set_title('counts' if name == 'counts' else
                 'normalised per true class (row = recall)')

  def cells(fig):
    layout = {}
    for ax, (name, *_) in zip(axes, panels):
      x0, y0, x1, y1 = _box(fig, ax.images[0])
      w, h = (x1 - x0) / k, (y1 - y0) / k
      layout[name] = [[[x0 + j * w, y0 + i * h, x0 + (j + 1) * w,
                        y0 + (i + 1) * h] for j in range(k)] for i in range(k)]
    return layout

  return _finish(fig, path, cells, title)


def plot_image_grid(images, captions, correct, path: str, title: str = '',
                    columns: int = 8, empty_message: str = 'no images') -> dict:
  """Image tiles with captions; a green frame for right, red + ✗ for wrong.

  Args:
    images: uint8 [N, H, W, C] (C = 1 or 3), as a person sees them.
    captions: N strings shown above the tiles.
    correct: N booleans.
  Returns {'tiles': [box per image]}.
  """
  n = len(images)
  columns = max(1, min(columns, n))
  rows = max(1, -(-n // columns))
  fig, axes = plt.subplots(rows, columns,
                           figsize=(1.75 * columns + 0.2, 2.05 * rows + 0.5),
                           dpi=DPI, squeeze=False)
  for ax in axes.ravel():
    ax.axis('off')
  if not n:
    axes[0, 0].text(0.5, 0.5, empty_message, ha='center', va='center',
                    transform=axes[0, 0].transAxes)
  for i in range(n):
    ax = axes[i // columns, i % columns]
    ax.axis('on')
    image = np.asarray(images[i])
    if image.ndim == 3 and image.shape[-1] == 1:
      ax.imshow(image[..., 0], cmap='gray', vmin=0, vmax=255,
                interpolation='nearest')
    else:
      ax.imshow(image, interpolation='nearest')
    ax.set_xticks([])
    ax.set_yticks([])
    colour = RIGHT_COLOUR if correct[i] else WRONG_COLOUR
    for spine in ax.spines.values():
      spine.set_color(colour)
      spine.set_linewidth(4)
    caption = captions[i] + ('' if correct[i] else f' {WRONG_MARK}')
    ax.set_title(caption, fontsize=8, color='black' if correct[i] else colour)
  return _finish(fig, path, lambda fig: {'tiles': [
      _box(fig, axes[i // columns, i % columns].images[0])
      for i in range(n)]}, title)
