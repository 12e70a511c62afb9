"""Whether the resized examples of a split are kept in memory: decided once
per group of splits (CacheSpec, and the bytes they would take), and logged
with the numbers.

A training run reads its training and validation splits every epoch, so
their caching is decided for the two together; any other split, and every
split of a run that evaluates a checkpoint, is decided alone. Nothing is
cached with crop='random_resized' (each epoch decodes new crops)."""

from typing import Callable

from absl import logging

from imgclf_jax.byte_sizes import bytes_text
from imgclf_jax.data import spec as spec_lib

# The splits that a training run reads every epoch and caches together.
CACHED_TOGETHER = ('train', 'validation')


class CachePolicy:
  """`caches(split)` for the splits of one source.

  `num_examples(split)` counts a split (no image decoded); `together`: the
  splits decided as one group (CACHED_TOGETHER; () decides each alone).
  """

  def __init__(self, spec: spec_lib.CacheSpec, crop: str,
               image_shape: tuple[int, int, int],
               num_examples: Callable[[str], int],
               together: tuple[str, ...] = CACHED_TOGETHER):
    self._spec, self._crop, self._shape = spec, crop, image_shape
    self._num_examples, self._together = num_examples, together
    self._decisions = {}

  def caches(self, split: str) -> bool:
    """Whether `split`'s resized examples are kept in memory: CacheSpec.cache
    True or False as it says; 'auto' when its group takes at most
    CacheSpec.budget_gb; never with crops. Decided once, and logged."""
    group = self._together if split in self._together else (split,)
    if group not in self._decisions:
      self._decisions[group] = self._decide(group)
    return self._decisions[group]

  def _decide(self, group) -> bool:
    spec = self._spec
    if self._crop != 'none':
      logging.info('Not caching the %s images: --config.crop=%s decodes a '
                   'new crop of each file every epoch (evaluation: the '
                   'central crop of each file, every time).',
                   ' and '.join(group), self._crop)
      return False
    counts = [self._num_examples(split) for split in group]
    s, _, channels = self._shape
    size = sum(counts) * s * s * channels
    what = (' and '.join(f'{n:,} {split}' for n, split in zip(counts, group)) +
            f' images ({bytes_text(size)} decoded at {s}x{s}x{channels})')
    budget = spec.budget_gb
    if spec.cache is True:
      logging.info('Caching the %s in memory (--config.cache=True).', what)
      return True
    if spec.cache is False:
      logging.info('Not caching the %s (--config.cache=False): each epoch '
                   'decodes the files.', what)
      return False
    if size <= round(budget * 1e9):
      logging.info('Caching the %s in memory: within --config.cache_budget_gb'
                   '=%g.', what, budget)
      return True
    logging.info('Not caching: the %s would take more than --config.'
                 'cache_budget_gb=%g; each epoch decodes the files.', what,
                 budget)
    return False
