"""Speed of imgclf_jax's training program, side by side with PyTorch.

From the repository root:

    python -m benchmarks.run                 # full run (several minutes)
    python -m benchmarks.run --quick         # under a minute
    python -m benchmarks.run --json out.json --set microbatches=1

(`python benchmarks/run.py ...` works too.) Measures, on this machine:
  1. train-step throughput of the step the trainer uses (imgclf_jax.steps,
     pmapped over all local devices) at batch 128 and a large batch;
  2. the same model/loss/optimizer/batch in PyTorch (CPU eager in its default
     NCHW layout and in channels_last, and torch.compile where it works),
     timed alternately with ours, and the
     ratio ours/PyTorch per pair (PyTorch is optional: without it the
     comparison is reported as skipped);
  3. eval-step throughput;
  4. the input pipeline alone, with every augmentation (img/s);
  5. real training epochs (imgclf_jax.train.train_and_evaluate; the median
     of epochs 2-4) against bare epochs of the same steps on one device
     batch, timed before and after them in the same fresh process: the
     pipeline's overhead;
  6. time to the first step (imports + compile) and peak memory (RSS);
  7. achieved GFLOP/s (XLA's own FLOP count of the step) and this machine's
     float32 matmul rate as the practical ceiling.

The fresh processes of 5 and 6 are this script again, as
`python -m benchmarks.run --child=epochs|first_step [--set ...]`; each
prints its result as the last line of its output (JSON for epochs, seconds
for first_step).
"""

import time

_START = time.perf_counter()  # --child=first_step counts from here

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

if __package__ in (None, ''):  # python benchmarks/run.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from imgclf_jax import steps
from imgclf_jax.errors import UserError

NUM_CLASSES = common.NUM_CLASSES


# --- the step's FLOPs and this machine's ceiling -------------------------------


def step_flops(setup):
  """FLOPs of one train step, as counted by XLA for the compiled step."""
  state, batch, _, _ = setup
  single = {k: v[0] for k, v in batch.items()}
  lowered = jax.jit(
      lambda s, b: jax.grad(lambda p: steps.cross_entropy(
          s.apply_fn({'params': p}, b['image'], train=True,
                     rngs={'dropout': jax.random.key(0)}),
          b['label']).mean())(s.params)).lower(state, single)
  cost = lowered.compile().cost_analysis()
  if isinstance(cost, list):
    cost = cost[0]
  return float(cost.get('flops', float('nan'))) if cost else float('nan')


def matmul_gflops(n=2048, repeats=5):
  """float32 n x n matmul rate of XLA:CPU on this machine (the ceiling)."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * n ** 3 / statistics.median(times) / 1e9


# --- PyTorch peer --------------------------------------------------------------


def torch_device():
  """Where the PyTorch peer runs: CUDA when JAX runs on a GPU (and this torch
  build has CUDA), else the CPU."""
  import torch
  if jax.default_backend() == 'gpu' and torch.cuda.is_available():
    return 'cuda'
  return 'cpu'


def torch_setup(batch_size, kind='eager', half=False):
  """The same CNN in PyTorch, Adam, cross-entropy; None if torch is absent.

  kind: 'eager' (NCHW, PyTorch's default layout), 'channels_last' (eager,
  NHWC memory format, often faster on CPU), or 'compile' (torch.compile).
  It runs on torch_device(), and in bfloat16 autocast with `half` (the
  harness's config has half_precision: ours then computes in bfloat16).
  """
  try:
    import torch
    from torch import nn
  except ImportError:
    return None
  torch.manual_seed(0)
  device = torch_device()
  if device == 'cpu':
    torch.set_num_threads(os.cpu_count() or 1)
  model = nn.Sequential(
      nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
      nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
      nn.Flatten(), nn.Linear(8 * 8 * 64, 128), nn.ReLU(), nn.Dropout(0.5),
      nn.Linear(128, NUM_CLASSES)).to(device)
  x = torch.randn(batch_size, 3, 32, 32, device=device)
  y = torch.randint(0, NUM_CLASSES, (batch_size,), device=device)
  if kind == 'channels_last':
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  loss_fn = nn.CrossEntropyLoss()

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=half):
      loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss

  if kind == 'compile':
    step = torch.compile(step)
  return step


def time_torch(step, num_steps):
  start = time.perf_counter()
  for _ in range(num_steps):
    loss = step()
  float(loss.detach())
  return time.perf_counter() - start


# --- measurements ----------------------------------------------------------------


def alternate(batch_size, num_steps, repeats, torch_kinds, overrides):
  """Median img/s of ours and each PyTorch kind, timed in alternation."""
  setup = common.jax_setup(batch_size, overrides)
  common.time_jax_train(setup, 3)  # compile + warm-up
  half = bool(common.make_config(batch_size, overrides).half_precision)
  peers = {}
  for kind in torch_kinds:
    try:
      peer = torch_setup(batch_size, kind, half)
      if peer is not None:
        time_torch(peer, 3)
        peers[kind] = peer
    except Exception as e:  # pylint: disable=broad-except
      print(f'  torch {kind} unavailable: {type(e).__name__}: '
            f'{str(e).splitlines()[0][:120]}')
  ours, theirs, ratios = [], {k: [] for k in peers}, {k: [] for k in peers}
  for _ in range(repeats):
    t = batch_size * num_steps / common.time_jax_train(setup, num_steps)
    ours.append(t)
    for kind, peer in peers.items():
      p = batch_size * num_steps / time_torch(peer, num_steps)
      theirs[kind].append(p)
      ratios[kind].append(t / p)
  result = {'batch_size': batch_size, 'jax_img_s': statistics.median(ours),
            'jax_img_s_all': ours}
  for kind in peers:
    result[f'torch_{kind}_img_s'] = statistics.median(theirs[kind])
    result[f'ratio_vs_torch_{kind}'] = statistics.median(ratios[kind])
  return result, setup


def pipeline_throughput(dataset, overrides, batch_size=128):
  """img/s of the input pipeline alone (every augmentation): a first epoch
  (decoding the files into the cache), then a whole second one (cache warm,
  including the shuffle buffer's fill at its start)."""
  from imgclf_jax import datasets, input_pipeline
  config = common.make_config(batch_size, overrides, dataset=dataset)
  pipeline = input_pipeline.InputPipeline(datasets.make_source(config), config)
  rates = []
  for epoch in (0, 1):
    start = time.perf_counter()
    count = sum(b['image'].shape[0] for b in pipeline.train_batches(epoch))
    rates.append(count / (time.perf_counter() - start))
  return {'pipeline_img_s': rates[1], 'pipeline_first_epoch_img_s': rates[0]}


def run_child(name, overrides, *args):
  """The last line `python -m benchmarks.run --child=NAME` prints."""
  cmd = [sys.executable, '-m', 'benchmarks.run', f'--child={name}',
         *common.override_args(overrides), *args]
  out = subprocess.run(cmd, cwd=common.ROOT, capture_output=True, text=True,
                       env=dict(os.environ))
  if out.returncode:
    raise RuntimeError(f'{" ".join(cmd)} failed:\n{out.stderr[-3000:]}')
  return out.stdout.strip().splitlines()[-1]


def epoch_overhead(dataset, overrides, batch_size=128, epochs=4, **train):
  """Real training epochs against bare epochs of the same steps, in a fresh
  process.

  A child interpreter (`--child=epochs`), started as `python main.py` starts
  one, times a bare epoch (the epoch's number of train steps on one device
  batch: compute only, no input pipeline), runs
  imgclf_jax.train.train_and_evaluate for `epochs` epochs, and times a
  second bare epoch. The overhead is the median train time of the real
  epochs after the first (which also decodes the files into the cache) over
  the mean of the two bare epochs. Timing whole epochs on both sides, before
  and after, keeps the machine's drift out of the ratio better than a short
  step timing does (BENCHMARKS.md). `train`: config overrides of the trained
  run only (the bare epochs run the step of `overrides`).
  """
  return json.loads(run_child(
      'epochs', overrides, f'--dataset={dataset}', f'--batch={batch_size}',
      f'--epochs={epochs}', *(f'--train-set={k}={v}' for k, v in train.items())))


def epochs_in_this_process(dataset, batch_size, epochs, overrides, train):
  """epoch_overhead's measurement (--child=epochs)."""
  from imgclf_jax import datasets, metrics, train as train_lib
  config = common.make_config(batch_size, overrides, dataset=dataset,
                              num_epochs=epochs, **train)
  steps_per_epoch = (datasets.make_source(config).num_examples('train') //
                     batch_size)
  setup = common.jax_setup(batch_size, overrides)
  common.time_jax_train(setup, 3)
  bare = [common.time_jax_train(setup, steps_per_epoch)]
  with tempfile.TemporaryDirectory() as workdir:
    train_lib.train_and_evaluate(config, workdir)
    records = metrics.EpochLog(workdir).read()
  bare.append(common.time_jax_train(setup, steps_per_epoch))
  assert records[0]['step'] == steps_per_epoch, records[0]
  seconds = [r['train_seconds'] for r in records[1:]]
  compute = statistics.mean(bare)
  return {'epoch_train_seconds': statistics.median(seconds),
          'epoch_train_seconds_each': seconds,
          'epoch_first_train_seconds': records[0]['train_seconds'],
          'epoch_bare_seconds_each': bare,
          'epoch_step_img_s': steps_per_epoch * batch_size / compute,
          'epoch_compute_seconds': compute,
          'epoch_overhead': statistics.median(seconds) / compute - 1,
          'epoch_steps': steps_per_epoch}


def first_step(overrides):
  """Seconds from a fresh interpreter to a finished first train step."""
  start = time.perf_counter()
  seconds = float(run_child('first_step', overrides))
  return {'first_step_s': seconds,
          'first_step_wall_s': time.perf_counter() - start}


def first_step_in_this_process(overrides):
  """first_step's measurement (--child=first_step): from the start of this
  module to the end of the first step."""
  setup = common.jax_setup(128, overrides)
  common.time_jax_train(setup, 1)
  return time.perf_counter() - _START


def make_dataset(num_per_class):
  """A generated 10-class folder of 32x32 PNGs (when no real data is here)."""
  from PIL import Image
  root = tempfile.mkdtemp(prefix='imgclf_bench_')
  rng = np.random.default_rng(0)
  for c in range(NUM_CLASSES):
    d = os.path.join(root, 'train', f'class_{c}')
    os.makedirs(d)
    for i in range(num_per_class):
      Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(
          os.path.join(d, f'{i}.png'))
  return f'folder:{root}'


def machine(malloc_tuned):
  info = common.machine(malloc_tuned)
  try:
    import torch
    info['torch'] = torch.__version__
    info['torch_device'] = torch_device()
  except ImportError:
    info['torch'] = None
  return info


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true', help='short mode (<1 min)')
  parser.add_argument('--json', help='write the results to this file')
  parser.add_argument('--dataset', default=None,
                      help='dataset for the pipeline and epoch measurements '
                      '(default: the shared CIFAR-10 JPEGs if present)')
  parser.add_argument('--set', action='append', default=[],
                      type=common.parse_override, metavar='KEY=VALUE',
                      help='config override, repeatable')
  child = parser.add_argument_group(
      'child processes (started by the harness itself)')
  child.add_argument('--child', choices=('epochs', 'first_step'),
                     help='measure one thing in this fresh process and '
                     'print it as the last line')
  child.add_argument('--batch', type=int, default=128,
                     help='--child=epochs: the batch size')
  child.add_argument('--epochs', type=int, default=4,
                     help='--child=epochs: epochs to train')
  child.add_argument('--train-set', action='append', default=[],
                     type=common.parse_override, metavar='KEY=VALUE',
                     help='--child=epochs: override of the trained config '
                     'only, repeatable')
  return parser.parse_args()


def main():
  malloc_tuned = common.tune_malloc()  # before JAX (and PyTorch) allocate
  args = parse_args()
  overrides = dict(args.set)
  if args.child == 'epochs':
    print(json.dumps(epochs_in_this_process(
        args.dataset, args.batch, args.epochs, overrides, dict(args.train_set))))
    return
  if args.child == 'first_step':
    print(first_step_in_this_process(overrides))
    return

  try:  # the overrides as the trainer would check them, before any work
    common.make_config(128, overrides)
  except UserError as e:
    sys.exit(f'error: {e}')
  quick = args.quick
  if args.dataset:
    dataset = args.dataset
  elif not quick and os.path.isdir(common.SHARED_CIFAR):
    dataset = f'folder:{common.SHARED_CIFAR}'
  else:
    dataset = make_dataset(200 if quick else 500)
  results = {'machine': machine(malloc_tuned), 'quick': quick,
             'dataset': dataset, 'overrides': overrides,
             'date': time.strftime('%Y-%m-%d')}
  kinds = ['eager'] if quick else ['eager', 'channels_last', 'compile']
  repeats, num_steps = (3, 5) if quick else (7, 20)

  print('train step, batch 128 ...', flush=True)
  b128, setup = alternate(128, num_steps, repeats, kinds, overrides)
  results['batch_128'] = b128
  results['train_img_s'] = b128['jax_img_s']
  results['torch_train_img_s'] = b128.get('torch_eager_img_s')
  results['ratio_vs_torch'] = b128.get('ratio_vs_torch_eager')
  flops = step_flops(setup)
  results['step_gflop_per_image'] = flops / 128 / 1e9
  results['achieved_gflops'] = flops / 128 * b128['jax_img_s'] / 1e9
  results['matmul_gflops'] = matmul_gflops(1024 if quick else 2048)

  print('eval step ...', flush=True)
  common.time_jax_eval(setup, 3)
  results['eval_img_s'] = statistics.median(
      128 * num_steps / common.time_jax_eval(setup, num_steps)
      for _ in range(repeats))

  if not quick:
    print('train step, batch 512 ...', flush=True)
    results['batch_512'], _ = alternate(512, max(num_steps // 4, 5), repeats,
                                        ['eager'], overrides)

  print('input pipeline ...', flush=True)
  results.update(pipeline_throughput(dataset, overrides))
  results['pipeline_vs_step'] = results['pipeline_img_s'] / results['train_img_s']

  print('real training epochs ...', flush=True)
  results.update(epoch_overhead(dataset, overrides))
  if not quick:
    print('real training epochs, data_on_device ...', flush=True)
    results['data_on_device'] = epoch_overhead(dataset, overrides, epochs=3,
                                               data_on_device=True)

  print('time to first step ...', flush=True)
  results.update(first_step(overrides))
  results['peak_rss_mb'] = resource.getrusage(
      resource.RUSAGE_SELF).ru_maxrss / 1024

  print_table(results)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=2)
    print(f'written to {args.json}')


def print_table(r):
  def fmt(v, spec='.0f'):
    return 'skipped (no torch)' if v is None else format(v, spec)
  rows = [
      ('train step, batch 128 (img/s)', fmt(r['train_img_s'])),
      ('PyTorch eager, batch 128 (img/s)', fmt(r['torch_train_img_s'])),
      ('ratio ours / PyTorch eager', fmt(r['ratio_vs_torch'], '.2f')),
  ]
  if 'torch_channels_last_img_s' in r['batch_128']:
    rows += [('PyTorch eager channels_last, batch 128 (img/s)',
              fmt(r['batch_128']['torch_channels_last_img_s'])),
             ('ratio ours / PyTorch channels_last',
              fmt(r['batch_128']['ratio_vs_torch_channels_last'], '.2f'))]
  if 'torch_compile_img_s' in r['batch_128']:
    rows += [('PyTorch compile, batch 128 (img/s)',
              fmt(r['batch_128']['torch_compile_img_s'])),
             ('ratio ours / PyTorch compile',
              fmt(r['batch_128']['ratio_vs_torch_compile'], '.2f'))]
  if 'batch_512' in r:
    b = r['batch_512']
    rows += [('train step, batch 512 (img/s)', fmt(b['jax_img_s'])),
             ('ratio ours / PyTorch eager, batch 512',
              fmt(b.get('ratio_vs_torch_eager'), '.2f'))]
  rows += [
      ('eval step, batch 128 (img/s)', fmt(r['eval_img_s'])),
      ('input pipeline, all augmentations (img/s)', fmt(r['pipeline_img_s'])),
      ('  first epoch, decoding files (img/s)',
       fmt(r['pipeline_first_epoch_img_s'])),
      ('pipeline / train step', fmt(r['pipeline_vs_step'], '.2f')),
      ('epoch (median of epochs 2-4): train wall (s)',
       fmt(r['epoch_train_seconds'], '.1f')),
      ('bare epoch, same steps on one device batch (s)',
       ' / '.join(fmt(t, '.1f') for t in r['epoch_bare_seconds_each'])
       + ' (before / after)'),
      ('  as a step rate (img/s)', fmt(r['epoch_step_img_s'])),
      ('epoch overhead', fmt(100 * r['epoch_overhead'], '.1f') + ' %'
       + (' (quick mode: a few steps on a tiny dataset, not a measure of '
          'the pipeline)' if r['quick'] else '')),
  ]
  if 'data_on_device' in r:
    rows += [
        ('data_on_device epoch (median of epochs 2-3): train wall (s)',
         fmt(r['data_on_device']['epoch_train_seconds'], '.1f')),
        ('data_on_device epoch vs plain bare epochs',
         fmt(100 * r['data_on_device']['epoch_overhead'], '.1f') + ' %'),
    ]
  rows += [
      ('time to first step (s)', fmt(r['first_step_s'], '.1f')),
      ('peak RSS (MB)', fmt(r['peak_rss_mb'])),
      ('train step GFLOP/image (XLA count)',
       fmt(r['step_gflop_per_image'], '.4f')),
      ('achieved GFLOP/s', fmt(r['achieved_gflops'], '.1f')),
      ('matmul f32 GFLOP/s (ceiling)', fmt(r['matmul_gflops'], '.1f')),
  ]
  width = max(len(k) for k, _ in rows)
  print()
  for k, v in rows:
    print(f'{k:<{width}}  {v}')


if __name__ == '__main__':
  main()
