"""--mode=predict: classify image files with a checkpoint.

    python main.py --mode=predict --workdir=runs/cifar10 --images='photos/*.jpg'

The model, class names, image size and normalisation statistics come from the
checkpoint; every file goes through the functions of `preprocess.py` that
training used (decode to the training channels, resize, [0, 1], normalise).
A file that cannot be read is reported by name and skipped.
"""

import csv
import glob
import os

from absl import logging
import numpy as np
import tensorflow as tf

from imgclf_jax import datasets
from imgclf_jax import device_axis
from imgclf_jax import inference
from imgclf_jax import preprocess
from imgclf_jax import report
from imgclf_jax import steps
from imgclf_jax.errors import UserError


def image_paths(spec: str) -> list[str]:
  """The files named by --images: a file, a folder (its image files) or a glob."""
  if not spec or not spec.strip():
    raise UserError('--images is required for --mode=predict: an image file, '
                    "a folder or a quoted glob such as 'photos/*.jpg'.")
  path = os.path.expanduser(spec.strip())
  if os.path.isdir(path):
    found = [os.path.join(path, f) for f in sorted(os.listdir(path))
             if f.lower().endswith(datasets.IMAGE_EXTENSIONS)]
    if not found:
      raise UserError(f'--images={spec}: the folder holds no image files '
                      f'({", ".join(datasets.IMAGE_EXTENSIONS)}).')
    return found
  if os.path.isfile(path):  # a file name may hold glob characters ('a[1].jpg')
    return [path]
  found = sorted(p for p in glob.glob(path, recursive=True)
                 if not os.path.isdir(p))
  if not found:
    raise UserError(f'--images={spec}: no such file, and no file matches it '
                    "as a glob: give an image file, a folder or a quoted glob "
                    "such as 'photos/*.jpg'.")
  return found


def load_image(path: str, size: int, channels: int) -> np.ndarray:
  """uint8 [size, size, channels]: the file decoded and resized as in training.

  Raises tf.errors.OpError when the file cannot be read or decoded.
  """
  image = preprocess.decode_image(tf.io.read_file(path), channels)
  return preprocess.resize_image(image, size, channels).numpy()


def probabilities(state, images: np.ndarray, normalization: dict,
                  batch_size: int, devices=None) -> np.ndarray:
  """Class probabilities [N, K] of uint8 images [N, S, S, C]."""
  devices = device_axis.local_devices(devices)
  p_predict = device_axis.pmap_step(
      steps.predict_step, out_axes=device_axis.PER_EXAMPLE, devices=devices)

  def batches():
    for start in range(0, len(images), batch_size):
      chunk = preprocess.to_unit_float(images[start:start + batch_size])
      yield {'image': preprocess.normalize(chunk, normalization).numpy()}

  padded = device_axis.pad_batches(batches(), len(devices))
  outputs = [dict(probs=p_predict(state, batch), mask=batch['mask'])
             for batch in device_axis.to_devices(padded, devices)]
  return device_axis.real_examples(outputs)['probs']


def predict_images(config, workdir: str, images: str, step=None) -> dict:
  """Classifies the files named by `images` with a checkpoint of `workdir`.

  Prints one line per file (top-k classes and probabilities, or why it was
  skipped), writes <workdir>/predictions_step<N>.csv and returns
  {'step', 'csv', 'predictions': [{'file', 'top_k': [[class, p], ...]}],
   'skipped': [{'file', 'error'}]}.
  """
  workdir = os.path.abspath(workdir)
  paths = image_paths(images)
  loaded = inference.load(workdir, step, config, mode='predict')
  step, class_names = loaded.step, loaded.class_names
  size, channels = loaded.image_shape[0], loaded.image_shape[-1]
  decoded, readable, skipped = [], [], []
  for path in paths:
    try:
      decoded.append(load_image(path, size, channels))
      readable.append(path)
    except tf.errors.OpError as e:
      reason = preprocess.decode_error_reason(e)
      logging.warning('Skipping %s: cannot read it as an image (%s).', path,
                      reason)
      skipped.append({'file': path, 'error': f'cannot read image: {reason}'})
  if not decoded:
    raise UserError(
        f'none of the {len(paths)} file(s) named by --images={images} could be '
        f'read as an image (first: {skipped[0]["file"]}: '
        f'{skipped[0]["error"]}): give JPEG, PNG, BMP or GIF files.')

  probs = probabilities(loaded.state, np.stack(decoded), loaded.normalization,
                        loaded.config.eval_batch_size)
  top = report.top_classes(probs, loaded.config.top_k)
  k = top.shape[1]
  predictions = [{'file': path,
                  'top_k': [[class_names[c], float(p[c])] for c in order]}
                 for path, p, order in zip(readable, probs, top)]
  csv_path = os.path.join(workdir, f'predictions_step{step}.csv')
  _write_csv(csv_path, predictions, skipped, k)
  for row in _in_order(paths, predictions, skipped):
    if 'error' in row:
      print(f'{row["file"]}\tskipped: {row["error"]}')
    else:
      print(row['file'] + '\t' + '\t'.join(
          f'{name} {p:.4f}' for name, p in row['top_k']))
  logging.info('Predicted %d image(s) with checkpoint step %d (%d skipped); '
               'written to %s', len(predictions), step, len(skipped), csv_path)
  return {'step': step, 'csv': csv_path, 'predictions': predictions,
          'skipped': skipped}


def _in_order(paths, predictions, skipped):
  rows = {r['file']: r for r in predictions + skipped}
  return [rows[p] for p in paths]


def _write_csv(path, predictions, skipped, k):
  with open(path, 'w', newline='') as f:
    out = csv.writer(f)
    out.writerow(['file'] + [x for j in range(k)
                             for x in (f'class_{j + 1}', f'prob_{j + 1}')] +
                 ['error'])
    paths = [r['file'] for r in predictions + skipped]
    for row in _in_order(sorted(paths), predictions, skipped):
      if 'error' in row:
        out.writerow([row['file']] + [''] * (2 * k) + [row['error']])
      else:
        out.writerow([row['file']] + [x for name, p in row['top_k']
                                      for x in (name, f'{p:.6f}')] + [''])
