"""What the benchmark scripts share: configs, the trainer's step on a synthetic
batch and its timing, variant timing, and a description of the machine.

Importing this module imports JAX and the library's model and step modules;
it sets nothing up. A script calls `tune_malloc()` first thing in its main
(before JAX allocates, as main.py does), then what it needs.
"""

import argparse
import importlib
import os
import platform
import subprocess
import sys
import time
from typing import NamedTuple

# TensorFlow (imported with the data modules) reads it when it is imported.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np

from imgclf_jax.config import keys
from imgclf_jax.config import specs
from imgclf_jax.models import registry
from imgclf_jax.parallel import device_axis
from imgclf_jax.training import steps
from imgclf_jax.training import train_state as train_state_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_CIFAR = os.path.abspath(
    os.path.join(ROOT, '..', 'shared', 'datasets', 'cifar10-jpeg'))
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)

# Config keys renamed since results were recorded under the old name.
RENAMED = {'train_step_slices': 'microbatches'}

# The networks the harness measures (`--model`), each with the config it is
# trained with: name -> (module in configs/, or None for the defaults of
# keys.get_config(); the batch the train step is measured at).
BENCH_MODELS = {
    'cnn': (None, 128),                 # the seed CNN, Adam
    'fast_cifar': ('cifar10_fast', 1024),  # airbench94 and its recipe
    # fine-tuning ImageNet weights (efficientnet_speed.py; not run.py's)
    'efficientnet_lite0': ('finetune_folder', 32),
}


def tune_malloc(model: str = 'cnn') -> bool:
  """main.tune_malloc(model): glibc malloc tuned as for training `model`
  (imgclf_jax.malloc_tuning: the CNN; IMGCLF_JAX_TUNE_MALLOC=0/1 switches).
  Call it before JAX (or PyTorch) allocates."""
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
  import main  # pylint: disable=import-outside-toplevel  (main.py, repo root)
  return main.tune_malloc(model)


# --- configs ---------------------------------------------------------------------


def parse_override(text: str):
  """`--set KEY=VALUE` -> (key, value typed as the key's default)."""
  key, _, value = text.partition('=')
  default = keys.get_config()
  if key in RENAMED:
    raise argparse.ArgumentTypeError(
        f'--set {text!r}: {key} is now {RENAMED[key]}')
  if key not in default or not value:
    raise argparse.ArgumentTypeError(f'--set {text!r}: use KEY=VALUE with a '
                                     'key of imgclf_jax/config/keys.py')
  kind = str if default[key] is None else type(default[key])
  return key, (value.lower() in ('1', 'true') if kind is bool else kind(value))


def override_args(overrides: dict) -> list:
  """`overrides` as the --set arguments that parse_override reads back."""
  return [f'--set={k}={v}' for k, v in overrides.items()]


def base_config(base: str = 'cnn'):
  """The config `base` (a BENCH_MODELS name) is trained with, unresolved:
  keys.get_config() for 'cnn', configs/cifar10_fast.py's for
  'fast_cifar'."""
  module = BENCH_MODELS[base][0]
  if module is None:
    return keys.get_config()
  if ROOT not in sys.path:  # the config files import `configs.default`
    sys.path.insert(0, ROOT)
  return importlib.import_module(f'configs.{module}').get_config()


def make_config(batch_size: int, overrides: dict | None = None,
                base: str = 'cnn', **more):
  """base_config(base) at `batch_size` (train and eval) with `overrides` and
  `more` applied, checked and resolved as the trainer resolves it
  (resolve.for_training: e.g. microbatches=3 at batch 128 is refused,
  as main.py would refuse it; microbatches 0 becomes this backend's value)."""
  from imgclf_jax.config import resolve  # pylint: disable=import-outside-toplevel
  config = base_config(base)
  config.batch_size = batch_size
  config.eval_batch_size = batch_size
  for k, v in {**(overrides or {}), **more}.items():
    config[k] = v
  return resolve.for_training(config, jax.local_device_count())


# --- the trainer's step ------------------------------------------------------------


def trainer_train_step(config, devices=None, steps_per_epoch=None):
  """The pmapped train step train_and_evaluate builds for `config`
  (resolved): (state, batch [D, B/D, ...], rng) -> (state, metrics).
  `steps_per_epoch` (for a lookahead's epoch ends): default CIFAR-10's
  45,000 training images' worth."""
  steps_per_epoch = steps_per_epoch or 45_000 // config.batch_size
  return device_axis.pmap_step(
      steps.train_step_for(specs.optim_spec(config), steps_per_epoch),
      in_axes=(None, 0, None), devices=devices)


def synthetic_batch(batch_size: int, seed: int = 0,
                    image_shape=IMAGE_SHAPE) -> dict:
  """A global batch [B, ...] of random images and one-hot labels, mask 1."""
  rng = np.random.default_rng(seed)
  return {
      'image': rng.normal(size=(batch_size, *image_shape)).astype(np.float32),
      'label': np.eye(NUM_CLASSES, dtype=np.float32)[
          rng.integers(0, NUM_CLASSES, batch_size)],
      'mask': np.ones(batch_size, np.float32),
  }


STEPS_PER_EPOCH = 100  # jax_setup's, for its schedule (any will do)


class Setup(NamedTuple):
  state: train_state_lib.TrainState
  batch: dict          # on the devices, [D, B/D, ...]
  train_step: object   # trainer_train_step
  eval_step: object    # pmapped steps.eval_step


def jax_setup(batch_size: int, overrides: dict | None = None,
              base: str = 'cnn') -> Setup:
  """State, a synthetic batch on the devices and the pmapped steps, as the
  trainer has them for make_config(batch_size, overrides, base) (the learning
  rate schedule and timed freezes of a 100-step epoch)."""
  config = make_config(batch_size, overrides, base)
  model = registry.create_model(specs.model_spec(config, NUM_CLASSES))
  shape = (config.image_size, config.image_size, 3)
  state = train_state_lib.create_train_state(
      jax.random.key(0), model, shape, specs.optim_spec(config),
      steps_per_epoch=STEPS_PER_EPOCH, head=registry.HEADS.get(config.model))
  # Moved to the devices the way the trainer moves its batches.
  batch = next(device_axis.to_devices(iter([synthetic_batch(
      batch_size, image_shape=shape)])))
  return Setup(state, batch, trainer_train_step(config),
               device_axis.pmap_step(steps.eval_step))


def time_jax_train(setup: Setup, num_steps: int) -> float:
  """Seconds for `num_steps` train steps (the state is not kept)."""
  state, batch, p_train, _ = setup
  rng = jax.random.key(1)
  start = time.perf_counter()
  for _ in range(num_steps):
    state, metrics = p_train(state, batch, rng)
  jax.block_until_ready((state, metrics))
  return time.perf_counter() - start


def time_jax_eval(setup: Setup, num_steps: int) -> float:
  state, batch, _, p_eval = setup
  start = time.perf_counter()
  for _ in range(num_steps):
    metrics = p_eval(state, batch)
  jax.block_until_ready(metrics)
  return time.perf_counter() - start


# --- variants of the step ------------------------------------------------------------


def variant_parser(description: str) -> argparse.ArgumentParser:
  """The command line of the scripts that compare variants of the step."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--rounds', type=int, default=12)
  parser.add_argument('--steps', type=int, default=5, help='steps per timing')
  return parser


def time_variants(setups: dict, rounds: int, num_steps: int) -> dict:
  """Seconds per step of each Setup in `setups` (name -> setup), timed in
  `rounds` rounds, each in a fresh random order (so no variant always runs
  first or after another): name -> [seconds per step, one per round]."""
  names = list(setups)
  seconds = {name: [] for name in names}
  order = np.random.default_rng(0)
  for _ in range(rounds):
    for i in order.permutation(len(names)):
      seconds[names[i]].append(
          time_jax_train(setups[names[i]], num_steps) / num_steps)
  return seconds


def describe_rounds(args) -> str:
  """What variant_parser's `args` timed, on which device."""
  return (f'train step, batch {args.batch}, {args.rounds} shuffled rounds of '
          f'{args.steps} steps ({jax.devices()[0].device_kind}, '
          f'{os.cpu_count()} CPUs)')


# --- the machine -----------------------------------------------------------------------


def git_commit() -> str | None:
  """The commit of the tree measured, marked when the tree had changes."""
  def git(*args):
    return subprocess.run(['git', *args], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()
  try:
    dirty = git('status', '--porcelain', '--untracked-files=no')
    return git('rev-parse', '--short', 'HEAD') + (
        ' (with uncommitted changes)' if dirty else '')
  except (OSError, subprocess.CalledProcessError):
    return None


def cpu_name() -> str | None:
  try:
    with open('/proc/cpuinfo') as f:
      names = [line.split(':', 1)[1].strip() for line in f
               if line.startswith('model name')]
  except OSError:
    return None
  return names[0] if names else ''


def machine(malloc_tuned: bool) -> dict:
  """Platform, versions, devices, CPU and commit (without PyTorch's)."""
  info = {'platform': platform.platform(), 'python': platform.python_version(),
          'cpus': os.cpu_count(), 'jax': jax.__version__,
          'malloc_tuned': malloc_tuned,
          'devices': [str(d) for d in jax.local_devices()],
          'commit': git_commit()}
  cpu = cpu_name()
  if cpu is not None:
    info['cpu'] = cpu
  return info


def link_images(class_dir: str, out_dir: str, indices) -> None:
  """Symlinks class_dir/NNNN.jpg for each index in `indices` into out_dir
  (the CIFAR-10 JPEG copy's names). Refuses an out_dir built with other
  indices: a re-run with other sizes must not leave extra files behind."""
  os.makedirs(out_dir, exist_ok=True)
  wanted = {f'{i:04d}.jpg' for i in indices}
  extra = sorted(set(os.listdir(out_dir)) - wanted)
  if extra:
    raise SystemExit(f'{out_dir} was built with other images ({extra[0]}, '
                     '...): remove it first.')
  for name in sorted(wanted):
    link = os.path.join(out_dir, name)
    if not os.path.lexists(link):
      os.symlink(os.path.realpath(os.path.join(class_dir, name)), link)


def main_py(*args):
  """Runs `python main.py *args` from the repository root as a user would;
  returns (the CompletedProcess, its wall seconds, the command). Exits with
  the end of its stderr if it fails."""
  cmd = [sys.executable, os.path.join(ROOT, 'main.py'), *args]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  start = time.time()
  result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                          text=True)
  seconds = time.time() - start
  if result.returncode:
    sys.stderr.write(result.stderr[-5000:])
    raise SystemExit(f'failed: {" ".join(cmd)}')
  return result, seconds, cmd


def write_table(path: str, header, rows) -> str:
  """A Markdown table of `header` (column names) and `rows` (lists of cell
  texts), written to `path` and printed; returns its text."""
  lines = ['| ' + ' | '.join(header) + ' |', '| --- ' * len(header) + '|']
  lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
  table = '\n'.join(lines)
  with open(path, 'w') as f:
    f.write(table + '\n')
  print(table)
  return table
