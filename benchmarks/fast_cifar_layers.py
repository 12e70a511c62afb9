"""Where fast_cifar's train step spends its time: each piece of the network
alone, forward and backward, in JAX and in PyTorch eager on the same shapes.

    python -m benchmarks.fast_cifar_layers [--batch 256] [--rounds 5] [--steps 3]

The pieces are the airbench94 network's (imgclf_jax/models/fast_cifar.py) at 32x32
inputs: each 3x3 convolution (the library's FastConv, as conv_impl=auto uses
on CPU; XLA's own convolution as nn.Conv emits it; and a form whose forward
pass and input gradient are im2col GEMMs too), each 2x2 max pool,
BatchNorm + exact GELU at each width, and the whole step for reference.
Each is timed as `value_and_grad` of the sum of its output (the forward pass
and the gradients of its inputs and weights), jitted, against the same
computation in PyTorch eager (channels_last, then default NCHW: forward,
`.sum().backward()`). Rounds alternate JAX and PyTorch in one process; the
median ms per call is printed, the convolutions' GFLOP/s, and the sum of
the pieces. PyTorch is the peer, not a dependency (BENCHMARKS.md).
"""

import argparse
import os
import statistics
import sys
import time

if __package__ in (None, ''):  # python benchmarks/fast_cifar_layers.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from benchmarks import common
from imgclf_jax.models import fast_conv

# (name, height = width, input channels, output channels) of each 3x3
# convolution, after the 2x2 'VALID' whitening conv (32 -> 31 pixels, 24
# channels) and each group's pool.
CONVS = [('group0 conv0', 31, 24, 64), ('group0 conv1', 15, 64, 64),
         ('group1 conv0', 15, 64, 256), ('group1 conv1', 7, 256, 256),
         ('group2 conv0', 7, 256, 256), ('group2 conv1', 3, 256, 256)]
POOLS = [('group0 pool', 31, 64), ('group1 pool', 15, 256),
         ('group2 pool', 7, 256)]
NORMS = [('group0 bn+gelu x2', 15, 64), ('group1 bn+gelu x2', 7, 256),
         ('group2 bn+gelu x2', 3, 256)]


def _xla_conv(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                  dimension_numbers=fast_conv._DN)  # pylint: disable=protected-access


# pylint: disable=protected-access
@jax.custom_vjp
def _im2col_conv(x, w):
  """A 3x3 'SAME' convolution whose forward pass and input gradient are both
  im2col GEMMs (fast_conv's form for the first layer's forward pass only);
  the filter gradient is FastConv's."""
  return fast_conv._gemm_fwd(x, w)


def _im2col_conv_bwd(residuals, dy):
  x, w = residuals
  return (fast_conv._gemm_fwd(dy, fast_conv._flipped(w)),
          fast_conv._dw(x, w, dy))


_im2col_conv.defvjp(lambda x, w: (fast_conv._gemm_fwd(x, w), (x, w)),
                    _im2col_conv_bwd)
# pylint: enable=protected-access


def _bn_gelu(x, bias):
  """Training-mode BatchNorm without scale (fast_cifar's), then exact GELU;
  twice, as each group has two."""
  for _ in range(2):
    mean = x.mean(axis=(0, 1, 2))
    var = ((x - mean) ** 2).mean(axis=(0, 1, 2))
    x = jax.nn.gelu((x - mean) * lax.rsqrt(var + 1e-12) + bias,
                    approximate=False)
  return x


def _jax_pieces(batch):
  """name -> {form: (jitted value_and_grad, its arguments)}."""
  rng = np.random.default_rng(0)
  def normal(*shape):
    return jnp.asarray(rng.standard_normal(shape, np.float32))
  pieces = {}
  for name, size, cin, cout in CONVS:
    x, w = normal(batch, size, size, cin), normal(3, 3, cin, cout) * 0.05
    pieces[name] = {form: (jax.jit(jax.value_and_grad(
        lambda x, w, c=conv: c(x, w).sum(), argnums=(0, 1))), (x, w))
                    for form, conv in (('FastConv', fast_conv.conv2d_same),
                                       ('XLA', _xla_conv),
                                       ('im2col GEMMs', _im2col_conv))}
  for name, size, c in POOLS:
    pieces[name] = {'FastConv': (
        jax.jit(jax.value_and_grad(lambda x: fast_conv.max_pool_2x2(x).sum())),
        (normal(batch, size, size, c),))}
  for name, size, c in NORMS:
    pieces[name] = {'FastConv': (
        jax.jit(jax.value_and_grad(lambda x, b: _bn_gelu(x, b).sum(),
                                   argnums=(0, 1))),
        (normal(batch, size, size, c), normal(c)))}
  return pieces


def _torch_pieces(batch, channels_last):
  """The same pieces in PyTorch eager: name -> a function of no argument."""
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(os.cpu_count() or 1)
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  gen = torch.Generator().manual_seed(0)
  def leaf(*shape, scale=1.0):
    t = torch.randn(*shape, generator=gen) * scale
    if t.dim() == 4:
      t = t.contiguous(memory_format=fmt)
    return t.requires_grad_(True)
  def run(fn, *args):
    def call():
      for a in args:
        a.grad = None
      out = fn(*args).sum()
      out.backward()
      return out
    return call
  pieces = {}
  conv = torch.nn.functional.conv2d
  for name, size, cin, cout in CONVS:
    pieces[name] = run(lambda x, w: conv(x, w, padding=1),
                       leaf(batch, cin, size, size),
                       leaf(cout, cin, 3, 3, scale=0.05))
  for name, size, c in POOLS:
    pieces[name] = run(lambda x: torch.nn.functional.max_pool2d(x, 2),
                       leaf(batch, c, size, size))
  def bn_gelu(x, bias):
    for _ in range(2):
      x = torch.nn.functional.gelu(torch.nn.functional.batch_norm(
          x, None, None, None, bias, training=True, eps=1e-12))
    return x
  for name, size, c in NORMS:
    pieces[name] = run(bn_gelu, leaf(batch, c, size, size), leaf(c))
  return pieces


def _ms(fn, steps, block):
  start = time.perf_counter()
  for _ in range(steps):
    out = fn()
  block(out)
  return 1000 * (time.perf_counter() - start) / steps


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--steps', type=int, default=3)
  args = parser.parse_args(argv)
  jax_pieces = _jax_pieces(args.batch)
  torch_kinds = {}
  try:
    torch_kinds = {'torch channels_last': _torch_pieces(args.batch, True),
                   'torch NCHW': _torch_pieces(args.batch, False)}
  except ImportError:
    print('PyTorch is not installed: JAX only')
  setup = common.jax_setup(args.batch, {}, 'fast_cifar')
  rng = jax.random.key(1)
  calls = {(name, form): (lambda f=f, a=a: f(*a))
           for name, forms in jax_pieces.items()
           for form, (f, a) in forms.items()}
  calls[('whole train step', 'FastConv')] = lambda: setup.train_step(
      setup.state, setup.batch, rng)
  for fn in calls.values():  # compile and warm up
    jax.block_until_ready(fn())
  if torch_kinds:
    from benchmarks import run  # pylint: disable=import-outside-toplevel
    config = common.make_config(args.batch, {}, 'fast_cifar')
    for kind, form in (('torch channels_last', 'channels_last'),
                       ('torch NCHW', 'eager')):
      torch_kinds[kind]['whole train step'] = run.torch_fast_cifar_setup(
          setup, config, form)
  for kind, pieces in torch_kinds.items():
    for name, fn in pieces.items():
      fn()
      calls[(name, kind)] = fn
  times = {key: [] for key in calls}
  for _ in range(args.rounds):
    for key, fn in calls.items():
      block = (lambda out: None) if key[1].startswith('torch') else (
          jax.block_until_ready)
      times[key].append(_ms(fn, args.steps, block))
  median = {key: statistics.median(v) for key, v in times.items()}
  forms = ['FastConv', 'XLA', 'im2col GEMMs', *torch_kinds]
  print(f'fast_cifar pieces at batch {args.batch}: median ms per call over '
        f'{args.rounds} rounds of {args.steps} (forward + backward); ours: '
        'FastConv / max_pool_2x2 (conv_impl=auto on CPU), XLA\'s '
        'convolution, im2col GEMMs')
  print(f'{"piece":20s}' + ''.join(f'{f:>22s}' for f in forms) +
        '   GFLOP/s: ' + ' / '.join(forms))
  # A convolution's forward pass, input gradient and filter gradient: three
  # times 2 * N * H * W * Cin * Cout * 9 FLOP.
  flop = {name: 3 * 2 * args.batch * size * size * cin * cout * 9
          for name, size, cin, cout in CONVS}
  names = [*jax_pieces, 'whole train step']
  for name in names:
    rates = ''
    if name in flop:
      rates = '   ' + ' / '.join(
          f'{flop[name] / median[(name, f)] / 1e6:.0f}' for f in forms)
    print(f'{name:20s}' + ''.join(
        f'{median[(name, f)]:22.1f}' if (name, f) in median else f'{"":22s}'
        for f in forms) + rates)
  totals = {f: sum(median[(n, f if (n, f) in median else 'FastConv')]
                   for n in jax_pieces) for f in forms}
  print(f'{"sum of the pieces":20s}' + ''.join(f'{totals[f]:22.1f}'
                                               for f in forms))


if __name__ == '__main__':
  main()
