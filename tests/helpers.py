"""Small real inputs for tests: generated image folders and configs."""

import functools
import os

import numpy as np
from PIL import Image

from imgclf_jax import config_keys
from imgclf_jax import device_axis
from imgclf_jax import steps

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
  config = config_keys.get_config()
  config.dataset = dataset
  config.image_size = 16
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_epochs = 2
  config.log_every_steps = 2
  config.shuffle_buffer_size = 64
  for key, value in overrides.items():
    config[key] = value
  return config


def p_train_step(devices=None, label_smoothing=0.0, microbatches=1):
  """steps.train_step pmapped as the trainer does (state and rng broadcast)."""
  return device_axis.pmap_step(
      functools.partial(steps.train_step, label_smoothing=label_smoothing,
                        microbatches=microbatches),
      in_axes=(None, 0, None), devices=devices)


def p_eval_step(devices=None):
  return device_axis.pmap_step(steps.eval_step, devices=devices)
