"""Test-time augmentation: the views of a batch and their weights, and the
model's logits averaged over them (evaluation, predict and export)."""

import jax.numpy as jnp


TTA_MODES = ('none', 'flip', 'flip_translate')


def tta_views(images, tta: str):
  """[(weight, images)] whose weighted sum of logits is the prediction.

  'flip': the images and their mirror, 1/2 each. 'flip_translate' (as
  airbench): those two with weight 1/4 each, and the four views of the
  images shifted one pixel up-left and down-right (edges reflected), each
  mirrored or not, 1/8 each.
  """
  mirror = images[:, :, ::-1, :]
  if tta == 'none':
    return [(1.0, images)]
  if tta == 'flip':
    return [(0.5, images), (0.5, mirror)]
  if tta != 'flip_translate':
    raise ValueError(f'unknown tta {tta!r}')
  h, w = images.shape[1:3]
  padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='reflect')
  shifted = [padded[:, :h, :w], padded[:, 2:h + 2, 2:w + 2]]
  return ([(0.25, images), (0.25, mirror)] +
          [(0.125, v) for s in shifted for v in (s, s[:, :, ::-1, :])])


def tta_logits(apply_fn, variables, images, tta: str = 'none'):
  """The model's logits in evaluation mode, averaged over `tta`'s views."""
  return sum(weight * apply_fn(variables, view, train=False)
             for weight, view in tta_views(images, tta))
