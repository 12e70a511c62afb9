"""Which im2col and filter-gradient forms of fast_conv.py are fastest here.

    python -m benchmarks.conv_forms [--batch 128] [--rounds 12] [--steps 5]

`imgclf_jax/models/fast_conv.py` expresses the convolution filter gradient as an
im2col GEMM. How XLA:CPU runs the equivalent ways of writing it depends on
the machine, so this script times the trainer's real train step (the
harness's `jax_setup`, same config) with the library's forms and with each
other form in turn, in rounds (each in a fresh random order) in one process,
and prints each form's median img/s and its median per-round ratio against
the library's. All forms give the same numbers up to the order of their
sums (the patch matrix is copied, not computed), which the script checks
before timing.

Forms:
  im2col  concat   (the library's) the nine shifted slices of the padded
                   input, concatenated along channels
          pad_sum  each slice padded into its own channel block, summed
                   (one loop fusion)
  dW dot  split_k  (the library's: dy^T @ P for the first layer, whose
                   patch matrix has at most 32 columns, and for the others
                   a batched dot over two halves of the rows, summed)
          dyT_p    dy^T @ P for every layer (XLA folds the transposes: a
                   dot contracting dim 0 of both operands)
          first_split8  the library's, but the first layer's dot split
                   over 8 blocks of rows
          first_conv_grad  the library's, but the first layer's filter
                   gradient as jax.grad emits it for lax.conv_general_dilated
                   (a convolution with a whole-image window)
"""

import os
import statistics
import sys

if __package__ in (None, ''):  # python benchmarks/conv_forms.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from imgclf_jax.models import fast_conv


def im2col_pad_sum(x, kh, kw):
  n, h, w, c = x.shape
  xp = fast_conv._pad_same(x, kh, kw)  # pylint: disable=protected-access
  taps = kh * kw
  out = None
  for t in range(taps):
    i, j = divmod(t, kw)
    block = jnp.pad(xp[:, i:i + h, j:j + w, :],
                    ((0, 0), (0, 0), (0, 0), (t * c, (taps - 1 - t) * c)))
    out = block if out is None else out + block
  return out.reshape(n * h * w, taps * c)


def dw_dyt_p(x, w, dy):
  kh, kw, cin, cout = w.shape
  p = fast_conv._im2col(x, kh, kw)  # pylint: disable=protected-access
  r = fast_conv._mm(dy.reshape(-1, cout).T, p).T  # pylint: disable=protected-access
  return r.reshape(kh, kw, cin, cout)


def first_layer(dw_first):
  """The library's _dw, with `dw_first` for the first (small-cin) layer."""
  library_dw = fast_conv._dw  # pylint: disable=protected-access

  def dw(x, w, dy):
    if fast_conv._small_cin(*w.shape[:3]):  # pylint: disable=protected-access
      return dw_first(x, w, dy)
    return library_dw(x, w, dy)
  return dw


def dw_split8(x, w, dy):
  kh, kw, cin, cout = w.shape
  p = fast_conv._im2col(x, kh, kw)  # pylint: disable=protected-access
  k = p.shape[0]
  r = jax.lax.dot_general(p.reshape(8, k // 8, -1), dy.reshape(8, k // 8, cout),
                          (((1,), (1,)), ((0,), (0,)))).sum(0)
  return r.reshape(kh, kw, cin, cout)


def dw_conv_grad(x, w, dy):
  conv = lambda kernel: jax.lax.conv_general_dilated(
      x, kernel, (1, 1), 'SAME', dimension_numbers=fast_conv._DN)  # pylint: disable=protected-access
  return jax.vjp(conv, w)[1](dy)[0]


IM2COL = {'concat': fast_conv._im2col, 'pad_sum': im2col_pad_sum}  # pylint: disable=protected-access
DW = {'split_k': fast_conv._dw, 'dyT_p': dw_dyt_p,  # pylint: disable=protected-access
      'first_split8': first_layer(dw_split8),
      'first_conv_grad': first_layer(dw_conv_grad)}
LIBRARY = ('concat', 'split_k')


def use(im2col, dw):
  fast_conv._im2col = IM2COL[im2col]  # pylint: disable=protected-access
  fast_conv._dw = DW[dw]  # pylint: disable=protected-access


def main():
  common.tune_malloc()  # before JAX allocates, as main.py does
  args = common.variant_parser(__doc__.splitlines()[0]).parse_args()

  x = jax.random.normal(jax.random.key(0), (4, 16, 16, 32))
  dy = jax.random.normal(jax.random.key(1), (4, 16, 16, 64))
  w = jnp.zeros((3, 3, 32, 64))
  want = [np.asarray(f(x, 3, 3)) for f in IM2COL.values()]
  assert all(np.array_equal(want[0], v) for v in want), 'im2col forms differ'
  for shapes in [((4, 16, 16, 32), (3, 3, 32, 64)), ((4, 32, 32, 3), (3, 3, 3, 32))]:
    x = jax.random.normal(jax.random.key(0), shapes[0])
    dy = jax.random.normal(jax.random.key(1), shapes[0][:3] + shapes[1][3:])
    w = jnp.zeros(shapes[1])
    grads = [np.asarray(f(x, w, dy)) for f in DW.values()]
    scale = np.abs(grads[0]).max()  # float32 sums of 4,096 products
    for g in grads[1:]:
      np.testing.assert_allclose(g, grads[0], rtol=1e-4, atol=1e-5 * scale)

  # The library's forms, and each other form with the rest as the library's.
  forms = [LIBRARY] + [(i, LIBRARY[1]) for i in IM2COL if i != LIBRARY[0]] + [
      (LIBRARY[0], d) for d in DW if d != LIBRARY[1]]
  setups = {}
  for form in forms:
    use(*form)  # the step is traced (and the forms read) on its first call
    setups[form] = common.jax_setup(args.batch)
    common.time_jax_train(setups[form], 3)
  use(*LIBRARY)
  rates = {form: [args.batch / t for t in seconds] for form, seconds in
           common.time_variants(setups, args.rounds, args.steps).items()}
  print(common.describe_rounds(args))
  for form in forms:
    ratio = statistics.median(
        a / b for a, b in zip(rates[form], rates[LIBRARY]))
    mark = '  (library)' if form == LIBRARY else ''
    print(f'  im2col {form[0]:8s} dW {form[1]:15s} '
          f'{statistics.median(rates[form]):7.0f} img/s  '
          f'ratio {ratio:.3f}{mark}')


if __name__ == '__main__':
  main()
