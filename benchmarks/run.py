"""Speed of imgclf_jax's training program, side by side with PyTorch.

From the repository root:

    python -m benchmarks.run                 # full run (several minutes)
    python -m benchmarks.run --quick         # under a minute
    python -m benchmarks.run --json out.json --set microbatches=1
    python -m benchmarks.run --model=fast_cifar --json out.json
    python -m benchmarks.run --model=fast_cifar --check   # the peer is ours

(`python benchmarks/run.py ...` works too.) Measures, on this machine, for
`--model=cnn` (the default: the seed CNN, the default config):
  1. train-step throughput of the step the trainer uses (imgclf_jax.training.steps,
     pmapped over all local devices) at batch 128 and a large batch;
  2. the same model/loss/optimizer/batch in PyTorch (CPU eager in its default
     NCHW layout and in channels_last, and torch.compile where it works),
     timed alternately with ours, and the
     ratio ours/PyTorch per pair (PyTorch is optional: without it the
     comparison is reported as skipped);
  3. eval-step throughput;
  4. the input pipeline alone, with every augmentation (img/s);
  5. real training epochs (imgclf_jax.modes.train.train_and_evaluate; the median
     of epochs 2-4) against bare epochs of the same steps on one device
     batch, timed before and after them in the same fresh process: the
     pipeline's overhead;
  6. time to the first step (imports + compile) and peak memory (RSS);
  7. achieved GFLOP/s (XLA's own FLOP count of the step) and this machine's
     float32 matmul rate as the practical ceiling.

`--model=fast_cifar` (the airbench94 network with configs/cifar10_fast.py's
recipe: Nesterov SGD, decoupled weight decay, BatchNorm biases' 64x steps,
label smoothing, EMA) measures 1, at batch 1024 (--batch), against its
PyTorch peer (benchmarks/torch_models.py, started from our initial weights
on the same batch), 3 and 7; the other sections are the CNN's only.
`--check` runs both from the same weights for a few steps and compares the
losses, parameters, statistics and EMA.

The fresh processes of 5 and 6 are this script again, as
`python -m benchmarks.run --child=epochs|first_step [--set ...]`; each
prints its result as the last line of its output (JSON for epochs, seconds
for first_step).
"""

import time

_START = time.perf_counter()  # --child=first_step counts from here

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import importlib.util
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
from imgclf_jax.errors import UserError
from imgclf_jax.parallel import device_axis
from imgclf_jax.training import steps

NUM_CLASSES = common.NUM_CLASSES
# fast_cifar's parameters for 10 classes at 32x32x3 (models.py, the paper).
FAST_CIFAR_PARAMS = 1_971_640
# The sections of a full run that --model=fast_cifar does not measure.
CNN_ONLY = ('batch_512', 'pipeline', 'epochs', 'data_on_device', 'first_step')


# --- the step's FLOPs and this machine's ceiling -------------------------------


def step_flops(setup):
  """FLOPs per image of a train step's gradient (forward and backward), as
  counted by XLA for the compiled computation of one device's share of the
  batch. A BatchNorm model runs in training mode (batch statistics over the
  pmap axis, here of one device)."""
  state, batch, _, _ = setup
  share = {k: v[:1] for k, v in batch.items()}  # [1, B / D, ...]
  mutable = ['batch_stats'] if state.batch_stats is not None else False

  def grad(s, b):
    def loss(p):
      out = s.apply_fn(steps.model_variables(s, p), b['image'], train=True,
                       rngs={'dropout': jax.random.key(0)}, mutable=mutable)
      return steps.cross_entropy(out[0] if mutable else out,
                                 b['label']).mean()
    return jax.grad(loss)(s.params)

  lowered = jax.pmap(grad, axis_name=device_axis.AXIS, in_axes=(None, 0),
                     devices=jax.local_devices()[:1]).lower(state, share)
  cost = lowered.compile().cost_analysis()
  if isinstance(cost, list):
    cost = cost[0]
  flops = float(cost.get('flops', float('nan'))) if cost else float('nan')
  return flops / share['image'].shape[1]


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


def seeded_torch_device():
  """torch_device() with PyTorch seeded (0) and, on the CPU, using every
  core."""
  import torch
  torch.manual_seed(0)
  device = torch_device()
  if device == 'cpu':
    torch.set_num_threads(os.cpu_count() or 1)
  return device


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
  device = seeded_torch_device()
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


def torch_fast_cifar_setup(setup, config, kind='eager', half=False):
  """fast_cifar's step in PyTorch (torch_models.train_step) from the weights
  of `setup` (ours, from jax_setup) on the same synthetic batch, for the
  resolved `config`; None if torch is absent. kind: as torch_setup's
  ('compile': the network torch.compile'd; the optimizer and EMA eager)."""
  try:
    import torch
    from benchmarks import torch_models
  except ImportError:
    return None
  device = seeded_torch_device()
  net = torch_models.FastCifar(NUM_CLASSES)
  torch_models.load_flax(net, setup.state.params, setup.state.batch_stats)
  ours = sum(x.size for x in jax.tree.leaves(setup.state.params))
  theirs = torch_models.num_params(net)
  assert theirs == ours == FAST_CIFAR_PARAMS, (
      f'parameters: PyTorch peer {theirs:,}, ours {ours:,}, published '
      f'{FAST_CIFAR_PARAMS:,}')
  net = net.to(device)
  host = common.synthetic_batch(setup.batch['image'].shape[0] *
                                setup.batch['image'].shape[1])
  x = torch.from_numpy(host['image'].transpose(0, 3, 1, 2).copy()).to(device)
  y = torch.from_numpy(host['label'].argmax(-1)).to(device)
  if kind == 'channels_last':
    net = net.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  forward = torch.compile(net) if kind == 'compile' else None
  return torch_models.train_step(
      net, x, y, torch_models.recipe(config, common.STEPS_PER_EPOCH),
      device=device, half=half, forward=forward)


def torch_peer(base, batch_size, kind, half, setup, config):
  """The PyTorch peer of `base` ('cnn' or 'fast_cifar'), or None."""
  if base == 'cnn':
    return torch_setup(batch_size, kind, half)
  return torch_fast_cifar_setup(setup, config, kind, half)


def time_torch(step, num_steps):
  start = time.perf_counter()
  for _ in range(num_steps):
    loss = step()
  float(loss.detach())
  return time.perf_counter() - start


# --- measurements ----------------------------------------------------------------


def alternate(batch_size, num_steps, repeats, torch_kinds, overrides,
              base='cnn'):
  """Median img/s of ours and each PyTorch kind, timed in alternation."""
  setup = common.jax_setup(batch_size, overrides, base)
  common.time_jax_train(setup, 3)  # compile + warm-up
  config = common.make_config(batch_size, overrides, base)
  half = bool(config.half_precision)
  peers = {}
  for kind in torch_kinds:
    try:
      peer = torch_peer(base, batch_size, kind, half, setup, config)
      if peer is not None:
        time_torch(peer, 3)
        peers[kind] = peer
    except AssertionError:  # the peer is not the same network
      raise
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
  result = {'batch_size': batch_size, 'steps': num_steps, 'rounds': repeats,
            'jax_img_s': statistics.median(ours), 'jax_img_s_all': ours}
  for kind in peers:
    result[f'torch_{kind}_img_s'] = statistics.median(theirs[kind])
    result[f'torch_{kind}_img_s_all'] = theirs[kind]
    result[f'ratio_vs_torch_{kind}'] = statistics.median(ratios[kind])
  return result, setup


def _max_diff(a, b, relative=False):
  """The largest |a - b| (relative: over |b|) over two trees of arrays."""
  diffs = jax.tree.map(
      lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)) /
                                (np.abs(np.asarray(y)) if relative else 1.0))),
      a, b)
  return max(jax.tree.leaves(diffs))


def _max_update_diff(theirs, ours, before):
  """The largest, over the leaves, of max |theirs - ours| over max |ours -
  before|: how far the peer's change from `before` is from ours, as a
  fraction of ours (a leaf that did not change must be equal)."""
  def leaf(t, o, b):
    t, o, b = (np.asarray(x, np.float64) for x in (t, o, b))
    diff, change = np.max(np.abs(t - o)), np.max(np.abs(o - b))
    return float(diff / change) if change else (0.0 if diff == 0 else np.inf)
  return max(jax.tree.leaves(jax.tree.map(leaf, theirs, ours, before)))


def check_peer(batch_size, overrides, num_steps=3, kinds=('eager',)):
  """fast_cifar against its PyTorch peers (`kinds`) from the same initial
  weights on the same batch: the loss of each of `num_steps` steps, and after
  them the largest differences of the parameters, BatchNorm statistics and
  EMA.

  Returns the comparison, whose 'mismatches' lists what differs (empty:
  the peers are ours): a loss by 1e-4 or more (the first step's: the
  networks differ; a later one's: the recipes), or the change of the
  parameters, BatchNorm running means or EMA by 3% of ours or more. The
  running variances are compared as they are: PyTorch averages the unbiased
  batch variance, Flax the biased one (n / (n - 1) apart, n the pixels per
  channel the BatchNorm averages over, fewest at the last BatchNorm: the
  batch's 3 x 3).
  """
  import torch  # pylint: disable=import-outside-toplevel
  from benchmarks import torch_models  # pylint: disable=import-outside-toplevel
  setup = common.jax_setup(batch_size, overrides, 'fast_cifar')
  config = common.make_config(batch_size, overrides, 'fast_cifar')
  state, rng = setup.state, jax.random.key(1)
  ours = []
  for _ in range(num_steps):
    state, metrics = setup.train_step(state, setup.batch, rng)
    ours.append(float(metrics.loss.compute()))

  def means(tree):
    return jax.tree.map(lambda x: x['mean'], tree, is_leaf=lambda x: 'mean' in x)

  def variances(tree):
    return jax.tree.map(lambda x: x['var'], tree, is_leaf=lambda x: 'var' in x)

  result = {'batch_size': batch_size, 'steps': num_steps,
            'torch': torch.__version__, 'loss_ours': ours, 'peers': {},
            'mismatches': []}
  # A parameter's (or statistic's) change over the steps may differ from
  # ours by float32 rounding, which the steps amplify (at learning rate 1.5,
  # the BatchNorm biases' x 64): under 1% of the change at batch 64 over 3
  # steps, where a recipe's mistake (momentum, Nesterov, the biases' step,
  # the decay, the EMA's weight) changes it by several %.
  limits = {'loss_abs_diff': 1e-4, 'params_update_rel_diff': 0.03,
            'batch_stats_mean_update_rel_diff': 0.03,
            'batch_stats_var_max_rel_diff': 1 / (batch_size * 9 - 1) + 1e-3,
            'ema_params_update_rel_diff': 0.03,
            'ema_batch_stats_mean_update_rel_diff': 0.03}
  for kind in kinds:
    peer = torch_fast_cifar_setup(setup, config, kind)
    theirs = [float(peer().detach()) for _ in range(num_steps)]
    params, stats = torch_models.to_flax(peer.model)
    diffs = {
        'num_params': torch_models.num_params(peer.model),
        'loss_torch': theirs,
        'loss_abs_diff': [abs(a - b) for a, b in zip(ours, theirs)],
        'params_max_abs_diff': _max_diff(params, state.params),
        'params_update_rel_diff': _max_update_diff(params, state.params,
                                                   setup.state.params),
        'batch_stats_mean_update_rel_diff': _max_update_diff(
            means(stats), means(state.batch_stats),
            means(setup.state.batch_stats)),
        'batch_stats_var_max_rel_diff': _max_diff(
            variances(stats), variances(state.batch_stats), relative=True),
    }
    if state.ema is not None:  # config.ema_decay > 0 (the peer's too)
      ema_params, ema_stats = torch_models.to_flax(peer.model, peer.ema)
      diffs['ema_params_update_rel_diff'] = _max_update_diff(
          ema_params, state.ema['params'], setup.state.ema['params'])
      diffs['ema_batch_stats_mean_update_rel_diff'] = _max_update_diff(
          means(ema_stats), means(state.ema['batch_stats']),
          means(setup.state.ema['batch_stats']))
    result['peers'][kind] = diffs
    for key, limit in limits.items():
      if key in diffs and not np.max(diffs[key]) < limit:
        result['mismatches'].append(
            f'{kind}: {key} {diffs[key]} (limit {limit:.2g})')
  return result


def pipeline_throughput(dataset, overrides, batch_size=128):
  """img/s of the input pipeline alone (every augmentation): a first epoch
  (decoding the files into the cache), then a whole second one (cache warm,
  including the shuffle buffer's fill at its start)."""
  from imgclf_jax.config import specs
  from imgclf_jax.data import input_pipeline
  from imgclf_jax.data import sources
  config = common.make_config(batch_size, overrides, dataset=dataset)
  data = specs.data_spec(config)
  pipeline = input_pipeline.InputPipeline(sources.make_source(data.source),
                                          data)
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
  imgclf_jax.modes.train.train_and_evaluate for `epochs` epochs, and times a
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
  from imgclf_jax.config import specs
  from imgclf_jax.data import sources
  from imgclf_jax.training import metrics
  from imgclf_jax.modes import train as train_lib
  config = common.make_config(batch_size, overrides, dataset=dataset,
                              num_epochs=epochs, **train)
  steps_per_epoch = (sources.make_source(specs.data_spec(
      config).source).num_examples('train') // batch_size)
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
  parser.add_argument('--model', choices=('cnn', 'fast_cifar'),
                      default='cnn',
                      help='the network measured: cnn (the seed CNN, the '
                      'default config) or fast_cifar (airbench94, '
                      'configs/cifar10_fast.py)')
  parser.add_argument('--quick', action='store_true', help='short mode (<1 min)')
  parser.add_argument('--json', help='write the results to this file')
  parser.add_argument('--dataset', default=None,
                      help='dataset for the pipeline and epoch measurements '
                      '(default: the shared CIFAR-10 JPEGs if present)')
  parser.add_argument('--set', action='append', default=[],
                      type=common.parse_override, metavar='KEY=VALUE',
                      help='config override, repeatable')
  parser.add_argument('--batch', type=int, default=None,
                      help='the batch of the train-step comparison (default: '
                      '128 for cnn, 1024 for fast_cifar; --check: 64); with '
                      '--child=epochs, the epochs\' batch (default 128)')
  parser.add_argument('--rounds', type=int, default=None,
                      help='alternating rounds of the train-step comparison '
                      '(default: cnn 7, quick 3; fast_cifar 5, quick 3)')
  parser.add_argument('--steps', type=int, default=None,
                      help='steps per timing in each round (default: cnn 20, '
                      'quick 5; fast_cifar 3, quick 2; --check: 3)')
  parser.add_argument('--torch-kinds', default=None,
                      help='comma-separated PyTorch peers: eager, '
                      'channels_last, compile (default: all three, quick: '
                      'eager)')
  parser.add_argument('--check', action='store_true',
                      help='fast_cifar only: run ours and the PyTorch peer '
                      'from the same weights on the same batch for a few '
                      'steps, compare losses, parameters, statistics and '
                      'EMA, print them and exit (1 if they differ)')
  child = parser.add_argument_group(
      'child processes (started by the harness itself)')
  child.add_argument('--child', choices=('epochs', 'first_step'),
                     help='measure one thing in this fresh process and '
                     'print it as the last line')
  child.add_argument('--epochs', type=int, default=4,
                     help='--child=epochs: epochs to train')
  child.add_argument('--train-set', action='append', default=[],
                     type=common.parse_override, metavar='KEY=VALUE',
                     help='--child=epochs: override of the trained config '
                     'only, repeatable')
  args = parser.parse_args()
  if args.torch_kinds is not None:
    args.torch_kinds = [k for k in args.torch_kinds.split(',') if k]
    unknown = set(args.torch_kinds) - {'eager', 'channels_last', 'compile'}
    if unknown:
      parser.error(f'--torch-kinds: unknown {", ".join(sorted(unknown))}')
  if args.check and args.model != 'fast_cifar':
    parser.error('--check compares fast_cifar with its peer: add '
                 '--model=fast_cifar')
  return args


def main():
  args = parse_args()
  # Before JAX (and PyTorch) allocate, as for training this model.
  malloc_tuned = common.tune_malloc(args.model)
  overrides = dict(args.set)
  if args.child == 'epochs':
    print(json.dumps(epochs_in_this_process(
        args.dataset, args.batch or 128, args.epochs, overrides,
        dict(args.train_set))))
    return
  if args.child == 'first_step':
    print(first_step_in_this_process(overrides))
    return

  base = args.model
  batch = args.batch or (64 if args.check else common.BENCH_MODELS[base][1])
  try:  # the overrides as the trainer would check them, before any work
    common.make_config(batch, overrides, base)
  except UserError as e:
    sys.exit(f'error: {e}')
  if args.check:
    if importlib.util.find_spec('torch') is None:
      sys.exit('--check needs PyTorch (no module named torch)')
    result = check_peer(batch, overrides, num_steps=args.steps or 3,
                        kinds=args.torch_kinds or ['eager'])
    ok = not result['mismatches']
    print(json.dumps(result, indent=2))
    print('the PyTorch peers match ours' if ok else
          'MISMATCH: the PyTorch peer differs from ours:\n  ' +
          '\n  '.join(result['mismatches']))
    if args.json:
      with open(args.json, 'w') as f:
        json.dump(result, f, indent=2)
    sys.exit(0 if ok else 1)

  quick = args.quick
  cnn = base == 'cnn'
  if not cnn:
    dataset = None  # no pipeline or epochs
  elif args.dataset:
    dataset = args.dataset
  elif not quick and os.path.isdir(common.SHARED_CIFAR):
    dataset = f'folder:{common.SHARED_CIFAR}'
  else:
    dataset = make_dataset(200 if quick else 500)
  results = {'model': base, 'machine': machine(malloc_tuned), 'quick': quick,
             'dataset': dataset, 'overrides': overrides,
             'date': time.strftime('%Y-%m-%d')}
  kinds = args.torch_kinds or (
      ['eager'] if quick else ['eager', 'channels_last', 'compile'])
  if cnn:
    repeats, num_steps = (3, 5) if quick else (7, 20)
  else:  # a step is ~0.7 GFLOP per image, seconds at batch 1024 on a CPU
    repeats, num_steps = (3, 2) if quick else (5, 3)
  repeats, num_steps = args.rounds or repeats, args.steps or num_steps

  print(f'train step, {base}, batch {batch} ...', flush=True)
  main_batch, setup = alternate(batch, num_steps, repeats, kinds, overrides,
                                base)
  results['train_batch'] = batch
  results[f'batch_{batch}'] = main_batch
  results['train_img_s'] = main_batch['jax_img_s']
  results['torch_train_img_s'] = main_batch.get('torch_eager_img_s')
  results['ratio_vs_torch'] = main_batch.get('ratio_vs_torch_eager')
  per_image = step_flops(setup)
  results['step_gflop_per_image'] = per_image / 1e9
  results['achieved_gflops'] = per_image * main_batch['jax_img_s'] / 1e9
  results['matmul_gflops'] = matmul_gflops(1024 if quick else 2048)

  print('eval step ...', flush=True)
  common.time_jax_eval(setup, 1 if not cnn else 3)
  results['eval_img_s'] = statistics.median(
      batch * num_steps / common.time_jax_eval(setup, num_steps)
      for _ in range(repeats))

  if not cnn:
    results['skipped'] = {k: 'skipped for this model' for k in CNN_ONLY}
    for k in CNN_ONLY:
      print(f'{k}: skipped for this model', flush=True)
  else:
    if not quick:
      print('train step, batch 512 ...', flush=True)
      results['batch_512'], _ = alternate(512, max(num_steps // 4, 5), repeats,
                                          ['eager'], overrides)

    print('input pipeline ...', flush=True)
    results.update(pipeline_throughput(dataset, overrides))
    results['pipeline_vs_step'] = (results['pipeline_img_s'] /
                                   results['train_img_s'])

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


KIND_NAMES = {'eager': 'PyTorch eager (NCHW)',
              'channels_last': 'PyTorch eager channels_last',
              'compile': 'PyTorch compile'}


def print_table(r):
  def fmt(v, spec='.0f'):
    return 'skipped (no torch)' if v is None else format(v, spec)
  b = r.get('train_batch', 128)
  main_batch = r[f'batch_{b}']
  rows = [('model', r.get('model', 'cnn')),
          (f'train step, batch {b} (img/s)', fmt(r['train_img_s']))]
  kinds = [k for k in KIND_NAMES if f'torch_{k}_img_s' in main_batch]
  if not kinds:
    rows += [(f'{KIND_NAMES["eager"]}, batch {b} (img/s)', fmt(None)),
             (f'ratio ours / {KIND_NAMES["eager"]}', fmt(None))]
  for kind in kinds:
    rows += [(f'{KIND_NAMES[kind]}, batch {b} (img/s)',
              fmt(main_batch[f'torch_{kind}_img_s'])),
             (f'ratio ours / {KIND_NAMES[kind]}',
              fmt(main_batch[f'ratio_vs_torch_{kind}'], '.2f'))]
  if 'batch_512' in r:
    b512 = r['batch_512']
    rows += [('train step, batch 512 (img/s)', fmt(b512['jax_img_s'])),
             ('ratio ours / PyTorch eager, batch 512',
              fmt(b512.get('ratio_vs_torch_eager'), '.2f'))]
  rows.append((f'eval step, batch {b} (img/s)', fmt(r['eval_img_s'])))
  if 'pipeline_img_s' in r:
    rows += [
        ('input pipeline, all augmentations (img/s)',
         fmt(r['pipeline_img_s'])),
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
  if 'first_step_s' in r:
    rows.append(('time to first step (s)', fmt(r['first_step_s'], '.1f')))
  rows += [(k.replace('_', ' '), v) for k, v in r.get('skipped', {}).items()]
  rows += [
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
