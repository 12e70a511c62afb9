"""Small real inputs for tests: generated image folders and configs, and the
few checks more than one test module makes."""

import contextlib
import csv
import functools
import glob
import io
import json
import os
import shutil
import subprocess

import matplotlib.colors
import numpy as np
from PIL import Image
import pytest

from imgclf_jax.config import keys
from imgclf_jax.config import specs
from imgclf_jax.data import input_pipeline
from imgclf_jax.data import sources
from imgclf_jax.models import registry
from imgclf_jax.parallel import device_axis
from imgclf_jax.modes import train
from imgclf_jax.training import steps

# A distinct mean colour per class, so a few epochs learn something.
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]


def make_image_folder(root, per_class=(12, 12, 12), splits=('train',),
                      size=(20, 24), seed=0, modes=('RGB',), ext='png'):
  """Writes root/<split>/class_<i>/<n>.<ext>: noisy images of a colour each."""
  rng = np.random.default_rng(seed)
  for split in splits:
    for c, count in enumerate(per_class):
      d = os.path.join(root, split, f'class_{c}')
      os.makedirs(d, exist_ok=True)
      for i in range(count):
        noise = rng.integers(-40, 40, size=(*size, 3))
        pixels = np.clip(np.array(COLOURS[c]) + noise, 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels).convert(modes[i % len(modes)])
        image.save(os.path.join(d, f'{i:03d}.{ext}'))
  return str(root)


def small_config(dataset, **overrides):
  """The default config, shrunk to run in seconds on a CPU."""
  config = keys.get_config()
  config.dataset = dataset
  config.image_size = 16
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_epochs = 2
  config.log_every_steps = 2
  config.log_every_seconds = 0.0  # log points by steps alone: the same in
                                  # every run
  config.shuffle_buffer_size = 64
  for key, value in overrides.items():
    config[key] = value
  return config


def augment_spec(names, **sizes):
  """The AugmentSpec of the default config with augment=names and `sizes`."""
  return specs.augment_spec(small_config('cifar10', augment=names, **sizes))


def make_source(config, class_names=None):
  """sources.make_source of `config`'s data spec."""
  return sources.make_source(specs.data_spec(config).source, class_names)


def make_pipeline(config, normalization=None, source=None, **kwargs):
  """input_pipeline.InputPipeline of `config`'s data spec (on `source`, or
  on make_source(config)); `kwargs`: process, training."""
  return input_pipeline.InputPipeline(source or make_source(config),
                                      specs.data_spec(config), normalization,
                                      **kwargs)


def p_train_step(devices=None, label_smoothing=0.0, microbatches=1,
                 ema_decay=0.0):
  """steps.train_step pmapped as the trainer does (state and rng broadcast)."""
  return device_axis.pmap_step(
      functools.partial(steps.train_step, label_smoothing=label_smoothing,
                        microbatches=microbatches, ema_decay=ema_decay),
      in_axes=(None, 0, None), devices=devices)


def p_eval_step(devices=None):
  return device_axis.pmap_step(steps.eval_step, devices=devices)


# efficientnet_lite0's code with two short stages that hold every kind of
# block (no expansion and expansion, 3x3 and 5x5 depthwise, stride 1 and 2,
# the residual add) and a narrow head: the same modules, names and name map,
# compiled in seconds (the full network's blocks repeat these).
SMALL_EFFICIENTNET = {'stages': ((1, 3, 1, 1, 8), (2, 5, 2, 6, 16)),
                      'stem_filters': 8, 'head_filters': 32}


def small_efficientnet(monkeypatch):
  """Makes the registry's efficientnet_lite0 SMALL_EFFICIENTNET for the
  test (its keyword arguments and fast convolutions as they are); for tests
  of what does not depend on the network's depth or width."""
  module, kwargs, fast = registry.MODELS['efficientnet_lite0']
  monkeypatch.setitem(registry.MODELS, 'efficientnet_lite0', (
      functools.partial(module, **SMALL_EFFICIENTNET), kwargs, fast))


def train_in(config, workdir):
  """train.train_and_evaluate in `workdir` (a str or a path)."""
  return train.train_and_evaluate(config, str(workdir))


def checkpoint_steps(workdir):
  """The steps of the checkpoints in `workdir`, sorted."""
  return sorted(int(os.path.basename(p)) for p in
                glob.glob(os.path.join(workdir, 'checkpoints', '[0-9]*')))


def records(workdir):
  """The lines of `workdir`'s metrics.jsonl."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def snapshot(workdir):
  """Every file in the workdir with its size and modification time."""
  files = {}
  for path in glob.glob(os.path.join(workdir, '**'), recursive=True):
    if os.path.isfile(path):
      st = os.stat(path)
      files[os.path.relpath(path, workdir)] = (st.st_size, st.st_mtime_ns)
  return files


def edit_metadata(workdir, step, edit):
  """Applies `edit` to checkpoint `step`'s metadata JSON; returns it."""
  path = os.path.join(workdir, 'checkpoints', str(step), 'metadata',
                      'metadata')
  with open(path) as f:
    metadata = json.load(f)
  edit(metadata)
  with open(path, 'w') as f:
    json.dump(metadata, f)
  return metadata


def break_files(paths):
  """Overwrites each file with bytes that no image decoder reads."""
  for path in paths:
    with open(path, 'wb') as f:
      f.write(b'not an image')


def channel_stats(images):
  """mean/std of uint8 images [N, S, S, C] per channel, as [0, 1] floats."""
  x = np.asarray(images, np.float64) / 255.0
  return x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))


def jpeg_bytes(pixels, subsampling=0, quality=95) -> bytes:
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, 'JPEG', quality=quality,
                               subsampling=subsampling)
  return out.getvalue()


def png_bytes(pixels) -> bytes:
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, 'PNG')
  return out.getvalue()


def smooth_noise(height, width, seed):
  """A photo-like uint8 RGB image: an upsampled colour field plus noise."""
  rng = np.random.default_rng(seed)
  low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
  image = np.asarray(Image.fromarray(low).resize((width, height),
                                                Image.BICUBIC), np.int16)
  return np.clip(image + rng.integers(-25, 26, image.shape), 0,
                 255).astype(np.uint8)


def jpeg_folder(root, per_class=(8, 8), size=(60, 90)):
  """root/train/class_<c>/<i>.jpg: smooth_noise JPEGs of `size`."""
  for c, n in enumerate(per_class):
    folder = os.path.join(root, 'train', f'class_{c}')
    os.makedirs(folder)
    for i in range(n):
      with open(os.path.join(folder, f'{i:02d}.jpg'), 'wb') as f:
        f.write(jpeg_bytes(smooth_noise(*size, seed=100 * c + i)))
  return str(root)


@contextlib.contextmanager
def small_disk(folder, size='1m'):
  """A tmpfs of `size` mounted on `folder` (created) for the block: a disk
  that really fills up. Skips the test where it cannot be mounted (mounting
  needs root)."""
  os.makedirs(folder, exist_ok=True)
  if os.geteuid() != 0 or not shutil.which('mount'):
    pytest.skip('mounting a small tmpfs needs root')
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}',
                            'tmpfs', str(folder)], capture_output=True,
                           text=True)
  if mounted.returncode:
    pytest.skip(f'cannot mount a tmpfs here: {mounted.stderr.strip()}')
  try:
    yield folder
  finally:
    subprocess.run(['umount', '-l', str(folder)], check=True)


def fill_disk(folder, leave=0):
  """Takes all but `leave` bytes of the free space of `folder`'s disk (a
  file named filler)."""
  with open(os.path.join(folder, 'filler'), 'ab') as f:
    f.write(bytes(max(shutil.disk_usage(folder).free - leave, 0)))


def pairs(ds):
  """A dataset of (image, label) as a list of (array, int)."""
  return [(image, int(label)) for image, label in ds.as_numpy_iterator()]


def assert_examples_at(got, full, positions):
  """`got` holds the examples of `full` at `positions`, in that order."""
  assert [label for _, label in got] == [full[i][1] for i in positions]
  for (image, _), i in zip(got, positions):
    np.testing.assert_array_equal(image, full[i][0])


# ----------------------------------------------------------------------------
# The report run (the session fixture `run`, tests/conftest.py): a trained
# checkpoint evaluated on a `test` split of a generated folder with a few
# images painted in another class's colour, so the model makes known mistakes.

CLASSES = ['class_0', 'class_1', 'class_2']
# test-split images repainted in another class's colour: (class, index, as).
REPAINTED = [('class_0', 0, 1), ('class_0', 1, 1), ('class_0', 2, 2),
             ('class_2', 0, 0), ('class_2', 1, 0)]


def paint(path, colour_index, seed):
  """Overwrites `path` with a noisy image of COLOURS[colour_index]."""
  rng = np.random.default_rng(seed)
  noise = rng.integers(-40, 40, size=(20, 24, 3))
  pixels = np.clip(np.array(COLOURS[colour_index]) + noise, 0, 255)
  Image.fromarray(pixels.astype(np.uint8)).save(path)


def read_csv(path):
  """A CSV file's rows as dicts."""
  with open(path) as f:
    return list(csv.DictReader(f))


def pixel(png, x, y):
  """The RGB of an image (PIL or array) at pixel coordinates (x, y)."""
  return np.asarray(png)[int(y), int(x), :3].astype(int)


def hex_rgb(colour):
  """A matplotlib colour as an RGB array of 0..255."""
  return np.array([int(v * 255) for v in matplotlib.colors.to_rgb(colour)])
