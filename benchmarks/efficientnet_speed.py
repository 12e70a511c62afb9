"""efficientnet_lite0's fine-tuning step against the same network in PyTorch
eager, and where the time goes: each convolution alone.

    PYTHONPATH=/path/to/torch-and-efficientnet-lite-pytorch \
      python -m benchmarks.efficientnet_speed [--batch 32] [--rounds 5]

1. The whole train step, as configs/finetune_folder.py trains after its
   linear probe (every layer; AdamW, BatchNorm statistics frozen, dropout
   0.2, 224x224, 10 classes): ours is the trainer's pmapped step
   (benchmarks/common.py), PyTorch's is efficientnet-lite-pytorch 0.1.0's
   EfficientNet-Lite0 (the network the shared weights were made for) with
   torch.optim.AdamW, its BatchNorm layers in eval mode (running
   statistics, their scale and bias still trained), in NCHW and in
   channels_last. Rounds alternate ours and theirs on one synthetic batch;
   medians of img/s and of the per-round ratio.
2. Each convolution of the network (stem, 1x1 expansions, depthwise k x k,
   1x1 projections, head) alone, forward and backward (`value_and_grad` of
   its output's sum, for its input and kernel) at the step's shapes, in the
   form the program uses on CPU (fast_conv.py: the depthwise ones as sums
   of taps, the 1x1 ones as dots; XLA's convolution for the stem), jitted,
   against PyTorch eager (channels_last and NCHW), ms
   per call, summed by kind. What the step spends outside them (BatchNorm,
   ReLU6, the pool, classifier, loss and AdamW) is the step less their sum.

PyTorch is the peer, not a dependency: without it, only our times print.
"""

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

if __package__ in (None, ''):  # python benchmarks/efficientnet_speed.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from benchmarks import common
from imgclf_jax.models import efficientnet
from imgclf_jax.models import fast_conv

MODEL = 'efficientnet_lite0'
OVERRIDES = {'probe_epochs': 0.0,  # every layer trains (random weights)
             'dataset': 'cifar10'}  # not read: a synthetic batch
KINDS = ('stem', 'expand 1x1', 'depthwise', 'project 1x1', 'head 1x1')


def convolutions(size: int = 224):
  """(kind, name, in height = width, in channels, out channels, kernel,
  stride, groups) of every convolution of efficientnet_lite0 at `size`."""
  out = [('stem', 'stem_conv', size, 3, 32, 3, 2, 1)]
  h, c, n = -(-size // 2), 32, 0
  for repeats, k, stride, expand, features in efficientnet.LITE0_STAGES:
    for j in range(repeats):
      s, width = (stride if j == 0 else 1), c * expand
      if expand != 1:
        out.append(('expand 1x1', f'blocks_{n} expand', h, c, width, 1, 1, 1))
      out.append(('depthwise', f'blocks_{n} depthwise {k}x{k}/{s}', h, width,
                  width, k, s, width))
      h = -(-h // s)
      out.append(('project 1x1', f'blocks_{n} project', h, width, features, 1,
                  1, 1))
      c, n = features, n + 1
  out.append(('head 1x1', 'head_conv', h, c, 1280, 1, 1, 1))
  return out


def _jax_conv(batch, layer):
  _, _, h, cin, cout, k, s, groups = layer
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, h, h, cin)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, cin // groups, cout)) * 0.1,
                  jnp.float32)

  def loss(x, w):  # the program's forms on CPU (conv_impl auto: 'fast')
    if groups > 1:
      y = fast_conv.depthwise_conv_same(x, w, (s, s))
    elif k == 1:
      y = lax.dot_general(x, w[0, 0], (((3,), (0,)), ((), ())))
    else:
      y = lax.conv_general_dilated(
          x, w, (s, s), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return jnp.sum(y)

  fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  return lambda: jax.block_until_ready(fn(x, w))


def _torch_conv(batch, layer, channels_last):
  import torch
  _, _, h, cin, cout, k, s, groups = layer
  conv = torch.nn.Conv2d(cin, cout, k, s, padding=k // 2, groups=groups,
                         bias=False)
  x = torch.randn(batch, cin, h, h)
  if channels_last:
    conv = conv.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  x.requires_grad_(True)

  def run():
    conv.zero_grad(set_to_none=True)
    x.grad = None
    conv(x).sum().backward()
  return run


def _ms(fn, steps):
  start = time.perf_counter()
  for _ in range(steps):
    fn()
  return 1000 * (time.perf_counter() - start) / steps


def torch_step(batch: int, channels_last: bool, size: int = 224,
               classes: int = common.NUM_CLASSES):
  """PyTorch's fine-tuning step of efficientnet_lite0 on a synthetic batch,
  or None without torch and efficientnet-lite-pytorch."""
  try:
    import torch
    from benchmarks import torch_pretrained
    net = torch_pretrained.efficientnet_lite(num_classes=classes,
                                             image_size=size)
  except ImportError:
    return None
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)
  net.train()
  for m in net.modules():  # frozen statistics (config.freeze_batch_norm)
    if isinstance(m, torch.nn.BatchNorm2d):
      m.eval()
  x = torch.randn(batch, 3, size, size)
  y = torch.randint(0, classes, (batch,))
  if channels_last:
    net = net.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
  loss_fn = torch.nn.CrossEntropyLoss()

  def step():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(net(x), y)
    loss.backward()
    opt.step()
    return float(loss.detach())
  return step


def whole_step(batch, rounds, steps):
  setup = common.jax_setup(batch, OVERRIDES, MODEL)
  common.time_jax_train(setup, 2)  # compile + warm-up
  peers = {}
  for name, last in (('torch_eager', False), ('torch_channels_last', True)):
    step = torch_step(batch, last)
    if step is not None:
      step()
      peers[name] = step
  ours, theirs = [], {k: [] for k in peers}
  for _ in range(rounds):
    ours.append(batch * steps / common.time_jax_train(setup, steps))
    for name, step in peers.items():
      theirs[name].append(batch * steps / (_ms(step, steps) * steps / 1000))
  result = {'jax_img_s': statistics.median(ours), 'jax_img_s_all': ours}
  for name, values in theirs.items():
    result[f'{name}_img_s'] = statistics.median(values)
    result[f'{name}_img_s_all'] = values
    result[f'ratio_vs_{name}'] = statistics.median(
        o / t for o, t in zip(ours, values))
  return result


def pieces(batch, rounds, steps):
  has_torch = importlib.util.find_spec('torch') is not None
  rows = []
  for layer in convolutions():
    kind, name, h, cin, cout, k, s, _ = layer
    jax_fn = _jax_conv(batch, layer)
    jax_fn()  # compile
    fns = {'jax': jax_fn}
    if has_torch:
      fns['torch_channels_last'] = _torch_conv(batch, layer, True)
      fns['torch_nchw'] = _torch_conv(batch, layer, False)
      for fn in fns.values():
        fn()
    times = {key: [] for key in fns}
    for _ in range(rounds):
      for key, fn in fns.items():
        times[key].append(_ms(fn, steps))
    row = {'kind': kind, 'name': name, 'shape': [h, cin, cout, k, s]}
    row.update({f'{key}_ms': statistics.median(v) for key, v in times.items()})
    rows.append(row)
    print(f'  {name:28s} ' + ' '.join(f'{key} {row[key + "_ms"]:7.2f} ms'
                                       for key in fns), flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--piece_steps', type=int, default=3)
  parser.add_argument('--json', help='write the results here')
  args = parser.parse_args()
  malloc_tuned = common.tune_malloc(MODEL)
  result = {'model': MODEL, 'batch': args.batch, 'rounds': args.rounds,
            'machine': common.machine(malloc_tuned)}
  try:
    import torch
    result['machine']['torch'] = torch.__version__
  except ImportError:
    pass
  print(f'train step, {MODEL}, batch {args.batch}, 224x224 ...', flush=True)
  result['step'] = whole_step(args.batch, args.rounds, args.steps)
  print(json.dumps({k: v for k, v in result['step'].items()
                    if not k.endswith('_all')}, indent=2), flush=True)
  print('each convolution, forward and backward ...', flush=True)
  rows = pieces(args.batch, args.rounds, args.piece_steps)
  result['pieces'] = rows
  columns = [c for c in ('jax', 'torch_channels_last', 'torch_nchw')
             if f'{c}_ms' in rows[0]]
  step_ms = {'jax': 1000 * args.batch / result['step']['jax_img_s']}
  if 'torch_channels_last_img_s' in result['step']:
    step_ms['torch_channels_last'] = (
        1000 * args.batch / result['step']['torch_channels_last_img_s'])
    step_ms['torch_nchw'] = 1000 * args.batch / result['step']['torch_eager_img_s']
  table = []
  for kind in (*KINDS, 'all convolutions'):
    chosen = [r for r in rows if kind in (r['kind'], 'all convolutions')]
    table.append([kind, str(len(chosen))] +
                 [f'{sum(r[c + "_ms"] for r in chosen):.0f}' for c in columns])
  table.append(['the whole step', '']
               + [f'{step_ms[c]:.0f}' for c in columns])
  result['by_kind'] = table
  common.write_table(
      os.devnull, ['piece', 'layers'] + [f'{c} ms' for c in columns], table)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=2)
    print(f'written to {args.json}')


if __name__ == '__main__':
  main()
