"""--mode=export: a checkpoint as a TensorFlow SavedModel for serving.

    python main.py --workdir=runs/cifar10 --mode=export [--step=best]

The model with its preprocessing (pixels to [0, 1], the training split's
normalisation), converted by jax2tf and saved in <workdir>/export/step<N>/
(or --export_dir). Loading and calling it needs TensorFlow only:

    model = tf.saved_model.load(path)
    model.signatures['serving_default'](images=uint8 [N, H, W, C])
    model.signatures['float_images'](images=float32 [N, H, W, C] in [0, 1])
      -> {'probabilities': [N, K], 'class_name': [N] (the most probable)}
    model.class_names  (tf.Variable, [K] strings; also assets/class_names.txt)

C is the checkpoint's channels; the images of a batch have one size H x W,
any size: the model resizes them to its S x S as --mode=predict does
(`model_pixels`: with config.crop, the central crop first; then
preprocess.resize_image, TensorFlow's antialiased resize, rounded to whole
pixel values for uint8 images). Images of S x S pass through untouched. It
runs on CPU, GPU (CUDA) and TPU wherever it was exported.
"""

import logging as pylogging
import os
import shutil

from absl import logging
import jax
from jax.experimental import jax2tf
import numpy as np
import tensorflow as tf

from imgclf_jax.data import preprocess
from imgclf_jax.errors import UserError
from imgclf_jax.models import tta as tta_lib
from imgclf_jax.modes import checkpoint_loader
from imgclf_jax.training import preemption
from imgclf_jax.training import steps

CLASS_NAMES_ASSET = 'class_names.txt'
# The model is lowered for each of these, so that the SavedModel runs on any
# of them whatever machine exported it (jax2tf's default: only the exporting
# machine's platform).
PLATFORMS = ('cpu', 'cuda', 'tpu')


def probabilities_fn(loaded: checkpoint_loader.Checkpoint):
  """fn(variables, images in [0, 1] [N, S, S, C]) -> class probabilities
  [N, K]: training's normalisation, then the model with the checkpoint's
  test-time augmentation (as steps.predict_step)."""
  normalization = loaded.normalization
  apply_fn, tta = loaded.state.apply_fn, loaded.report.tta

  def probabilities(variables, images):
    return jax.nn.softmax(tta_lib.tta_logits(
        apply_fn, variables, preprocess.normalize(images, normalization),
        tta))

  return probabilities


def model_pixels(images, size: int, crop: str = 'none'):
  """uint8 or float32 images [N, H, W, C] (one size in the batch, any size)
  -> [N, size, size, C] of the same dtype, as --mode=predict sees decoded
  files: with config.crop `crop`, the central window
  (preprocess.central_window) first; then preprocess.resize_image for uint8
  (antialiased, rounded), for float32 the same resize without rounding.
  Images of that size (and no crop) pass through untouched."""
  channels = images.shape[-1]

  def one(image):
    if crop != 'none':
      shape = tf.shape(image)
      y, x, h, w = tf.unstack(preprocess.central_window(shape[0], shape[1]))
      image = image[y:y + h, x:x + w]
    if image.dtype == tf.uint8:
      return preprocess.resize_image(image, size, channels)
    same = tf.reduce_all(tf.shape(image)[:2] == size)
    return tf.cond(same, lambda: image, lambda: tf.image.resize(
        image, [size, size], antialias=True))

  return tf.map_fn(one, images, fn_output_signature=tf.TensorSpec(
      [size, size, channels], images.dtype))


class _Served(tf.Module):
  """What the SavedModel holds: the variables, the class names and the two
  signatures."""

  def __init__(self, loaded: checkpoint_loader.Checkpoint, asset_path: str):
    super().__init__()
    size, channels = loaded.image_shape[0], loaded.image_shape[-1]
    self.model_variables = tf.nest.map_structure(
        lambda a: tf.Variable(np.asarray(a), trainable=False),
        steps.inference_variables(loaded.state))
    self.class_names = tf.Variable(list(loaded.class_names), trainable=False)
    self.class_names_file = tf.saved_model.Asset(asset_path)
    self._probabilities = jax2tf.convert(
        probabilities_fn(loaded), with_gradient=False,
        polymorphic_shapes=[None, f'(b, {size}, {size}, {channels})'],
        native_serialization_platforms=PLATFORMS)
    self._size, self._crop = size, loaded.config.crop
    shape = [None, None, None, channels]
    self.uint8_images = tf.function(
        self._from_uint8, autograph=False,
        input_signature=[tf.TensorSpec(shape, tf.uint8, name='images')])
    self.float_images = tf.function(
        self._from_float, autograph=False,
        input_signature=[tf.TensorSpec(shape, tf.float32, name='images')])

  def _from_uint8(self, images):
    images = model_pixels(images, self._size, self._crop)
    return self._from_unit_float(tf.cast(images, tf.float32) / 255.0)

  def _from_float(self, images):
    return self._from_unit_float(model_pixels(images, self._size, self._crop))

  def _from_unit_float(self, images):
    probabilities = self._probabilities(self.model_variables, images)
    return {'probabilities': probabilities,
            'class_name': tf.gather(self.class_names,
                                    tf.argmax(probabilities, axis=-1))}


def _save(served, path: str, signatures: dict):
  """tf.saved_model.save without its INFO lines (inputs 'renamed' for
  'unsupported characters', 'Sharding callback duration', where it wrote
  the assets and fingerprint: export logs where the SavedModel is); the
  loggers' levels are put back after it (tf.saved_model.save also leaves
  absl's at WARNING)."""
  loggers = [logging.get_absl_logger(), pylogging.getLogger('tensorflow')]
  levels = [logger.level for logger in loggers]
  try:
    for logger in loggers:
      logger.setLevel(pylogging.WARNING)
    tf.saved_model.save(served, path, signatures=signatures)
  finally:
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)


def export_checkpoint(config, workdir: str, step=None, export_dir=None
                      ) -> dict:
  """Writes checkpoint `step` of `workdir` as a SavedModel to `export_dir`
  (default <workdir>/export/step<N>), which must not exist yet; returns
  {'step', 'path', 'image_shape', 'class_names', 'signatures'}."""
  workdir = os.path.abspath(workdir)
  loaded = checkpoint_loader.load(workdir, step, config, mode='predict')
  path = os.path.abspath(export_dir or os.path.join(
      workdir, 'export', f'step{loaded.step}'))
  if os.path.lexists(path):
    raise UserError(f'{path} already exists: remove it, or give another '
                    'folder with --export_dir.')
  partial = path + '.partial'
  shutil.rmtree(partial, ignore_errors=True)  # a killed export's leftovers
  os.makedirs(partial)
  try:
    asset = os.path.join(partial, CLASS_NAMES_ASSET)
    with open(asset, 'w') as f:
      f.write(''.join(f'{name}\n' for name in loaded.class_names))
    served = _Served(loaded, asset)
    signatures = {'serving_default': served.uint8_images,
                  'float_images': served.float_images}
    _save(served, partial, signatures)
    os.remove(asset)  # copied into assets/
    preemption.raise_if_swallowed()  # a stop lost in TensorFlow's tracing
    os.replace(partial, path)
  finally:
    shutil.rmtree(partial, ignore_errors=True)
  result = {'step': loaded.step, 'path': path,
            'image_shape': list(loaded.image_shape),
            'class_names': list(loaded.class_names),
            'signatures': sorted(signatures)}
  logging.info('Exported checkpoint step %d as a SavedModel to %s.',
               loaded.step, path)
  return result
