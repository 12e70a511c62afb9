"""Pictures written into the workdir (matplotlib, no display needed)."""

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top


def plot_curves(records: list[dict], path: str):
  """Accuracy and loss per epoch, train vs validation, side by side."""
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
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
