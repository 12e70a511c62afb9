"""Pictures written into the workdir (matplotlib, no display needed)."""

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top


OVERFIT_COLOUR = '#ff0000'


def plot_curves(records: list[dict], path: str, overfit_epoch=None) -> dict:
  """Accuracy and loss per epoch, train vs validation, side by side.

  With `overfit_epoch`, a red dashed line marks where overfitting starts on
  both panels. Returns {'overfit_x': [x pixel of that line per panel]}.
  """
  epochs = [r['epoch'] for r in records]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
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
  fig.tight_layout()
  layout = {'overfit_x': []}
  if overfit_epoch is not None:
    fig.canvas.draw()
    layout['overfit_x'] = [float(ax.transData.transform((overfit_epoch, 0))[0])
                           for ax in axes]
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return layout
