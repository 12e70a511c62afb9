"""Where the train step's time goes: the in-step cost of each convolution gradient.

    python -m benchmarks.step_breakdown [--batch 128] [--rounds 12] [--steps 5]

Times the trainer's real train step (`benchmarks.common.jax_setup`) as it is,
and with one piece of the seed CNN's convolution backward pass at a time
replaced by a stand-in of the same shape that costs nothing (a constant that
still depends on the piece's inputs, so nothing else is removed with it):

  conv1 dW   the first layer's filter gradient (its im2col patch matrix is
             the forward pass's and stays)
  conv2 dW   the second layer's filter gradient, with its im2col
  conv2 dx   the second layer's input gradient (the first layer's is never
             computed: nothing uses it)
  all three  the three together: what is left is the forward pass, the
             dense layers, the pools' and ReLUs' gradients and the optimizer

in rounds (each in a fresh random order) in one process, and prints each
variant's median ms per step and its median per-round saving against the
full step: the in-step cost of that piece, overlap with the rest included.
The stand-ins make the gradients wrong; this is a timing tool only, and
nothing in the library uses them.
"""

import os
import statistics
import sys

if __package__ in (None, ''):  # python benchmarks/step_breakdown.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp

from benchmarks import common
from imgclf_jax.models import fast_conv

LIBRARY_DX = fast_conv._dx  # pylint: disable=protected-access
LIBRARY_DW = fast_conv._dw  # pylint: disable=protected-access


def _layer(w):
  return 'conv1' if fast_conv._small_cin(*w.shape[:3]) else 'conv2'  # pylint: disable=protected-access


def use(removed):
  """Patches fast_conv so the pieces named in `removed` cost nothing."""
  def dx(w, dy):
    if f'{_layer(w)} dx' in removed:
      return jnp.zeros(dy.shape[:3] + w.shape[2:3], dy.dtype) + dy.mean()
    return LIBRARY_DX(w, dy)

  def dw(x, w, dy):
    if f'{_layer(w)} dW' in removed:
      return jnp.zeros_like(w) + x.mean() + dy.mean()
    return LIBRARY_DW(x, w, dy)
  fast_conv._dx, fast_conv._dw = dx, dw  # pylint: disable=protected-access


VARIANTS = {'full step': (), 'conv1 dW': ('conv1 dW',),
            'conv2 dW': ('conv2 dW',), 'conv2 dx': ('conv2 dx',),
            'all three': ('conv1 dW', 'conv2 dW', 'conv2 dx')}


def main():
  common.tune_malloc()  # before JAX allocates, as main.py does
  args = common.variant_parser(__doc__.splitlines()[0]).parse_args()

  setups = {}
  for name, removed in VARIANTS.items():
    use(removed)  # read when the step is traced, on its first call
    setups[name] = common.jax_setup(args.batch)
    common.time_jax_train(setups[name], 3)
  use(())
  seconds = common.time_variants(setups, args.rounds, args.steps)
  print(common.describe_rounds(args) + '; ms per step')
  print(f'  {"removed":12s} {"step":>7s} {"saving":>7s}')
  for name in VARIANTS:
    step = statistics.median(seconds[name]) * 1e3
    saving = statistics.median(
        (full - s) * 1e3 for full, s in zip(seconds['full step'], seconds[name]))
    print(f'  {name:12s} {step:7.1f} {saving:7.1f}')


if __name__ == '__main__':
  main()
