"""--mode=predict: classify image files with a checkpoint.

    python main.py --mode=predict --workdir=runs/cifar10 --images='photos/*.jpg'

The model, class names, image size and normalisation statistics come from the
checkpoint; every file goes through the functions of `preprocess.py` that
evaluation uses (decode to the training channels, resize, or with
config.crop the central crop; [0, 1], normalise).
A file that cannot be read is reported by name and skipped. Files are decoded
and predicted config.eval_batch_size at a time, and their results printed and
written as they come, so memory does not grow with the number of files.
"""

import collections
import csv
import fnmatch
import functools
import glob
import itertools
import os
import sys

from absl import logging
import numpy as np
import tensorflow as tf

from imgclf_jax.data import folder_scan
from imgclf_jax.data import preprocess
from imgclf_jax.errors import UserError
from imgclf_jax.modes import checkpoint_loader
from imgclf_jax.parallel import device_axis
from imgclf_jax.parallel import distributed
from imgclf_jax.report import predictions
from imgclf_jax.training import preemption
from imgclf_jax.training import steps


def image_paths(spec: str) -> list[str]:
  """The files named by --images, sorted: a file (whatever its extension),
  the image files in a folder and its subfolders (e.g. root/test/<class>/),
  or the image files a glob matches. Hidden files and folders are left out
  and links to folders are not followed."""
  if not spec or not spec.strip():
    raise UserError('--images is required for --mode=predict: an image file, '
                    "a folder or a quoted glob such as 'photos/*.jpg'.")
  path = os.path.expanduser(spec.strip())
  if os.path.isfile(path):  # a file name may hold glob characters ('a[1].jpg')
    return [path]
  if os.path.isdir(path):
    found, kind = _glob(os.path.join(path, '**'), spec), 'the folder holds'
    if not found:
      raise UserError(f'--images={spec}: the folder holds no files (hidden '
                      'ones and links to folders left out): give a folder of '
                      "images, an image file or a quoted glob such as "
                      "'photos/*.jpg'.")
  else:
    found, kind = _glob(path, spec), 'it matches'
    if not found:
      raise UserError(f'--images={spec}: no such file, and no file matches it '
                      "as a glob: give an image file, a folder or a quoted "
                      "glob such as 'photos/*.jpg'.")
  images = [p for p in found
            if p.lower().endswith(folder_scan.IMAGE_EXTENSIONS)]
  if not images:
    raise UserError(f'--images={spec}: {kind} no image files '
                    f'({", ".join(folder_scan.IMAGE_EXTENSIONS)}), only '
                    f'{len(found)} other file(s) (e.g. {found[0]}): name a file '
                    'explicitly to predict it whatever its extension.')
  if len(images) < len(found):
    logging.warning('--images=%s: left out %d file(s) without an image '
                    'extension (name a file to predict it).', spec,
                    len(found) - len(images))
  return images


def _glob(pattern: str, spec: str) -> list[str]:
  """The files `pattern` matches as glob.glob(pattern, recursive=True) would
  find them, sorted, without following links to folders (a '**' over a link
  to '.' would never end; one to '/' would read the whole disk)."""
  parts = pattern.split(os.sep)
  magic = [glob.has_magic(p) for p in parts] + [True]
  fixed, rest = parts[:magic.index(True)], parts[magic.index(True):]
  if not rest:
    return []
  top = os.sep.join(fixed) or (os.sep if fixed else '.')
  found, links = [], []
  for folder, subfolders, files in os.walk(top):
    below = os.path.relpath(folder, top).split(os.sep)
    below = [] if below == ['.'] else below
    subfolders[:] = [d for d in subfolders if _matches(below + [d], rest,
                                                       folder_only=True)]
    links += [os.path.join(folder, d) for d in subfolders
              if os.path.islink(os.path.join(folder, d))]
    found += [os.path.join(folder, f) if fixed else os.path.join(*below, f)
              for f in files if _matches(below + [f], rest)]
  if links:
    logging.warning('--images=%s: links to folders are not followed (%d, e.g. '
                    '%s).', spec, len(links), links[0])
  return sorted(found)


def _matches(names, patterns, folder_only=False) -> bool:
  """Path components `names` match glob components `patterns` ('**': any
  number of them; a hidden name only matches a pattern starting with '.');
  `folder_only`: `names` is a folder that may hold a match."""
  if not patterns:
    return not names and not folder_only
  if not names:
    return folder_only
  head, tail = patterns[0], patterns[1:]
  if head == '**':
    if folder_only and not any(n.startswith('.') for n in names):
      return True  # '**' takes the folder, and `tail` may match below it
    for i in range(len(names) + 1):
      if i and names[i - 1].startswith('.'):
        return False
      if _matches(names[i:], tail, folder_only):
        return True
    return False
  return (head.startswith('.') or not names[0].startswith('.')) and (
      fnmatch.fnmatch(names[0], head)) and _matches(names[1:], tail,
                                                     folder_only)


def load_image(path: str, size: int, channels: int,
               crop: str = 'none') -> np.ndarray:
  """uint8 [size, size, channels]: the file decoded and resized as
  evaluation does under config.crop `crop` (preprocess.eval_image).

  Raises tf.errors.OpError when the file cannot be read or decoded.
  """
  return preprocess.eval_image(tf.io.read_file(path), size, channels,
                               crop).numpy()


def probabilities(state, images, normalization: dict, batch_size: int,
                  devices=None, tta: str = 'none'):
  """Class probabilities of uint8 images [S, S, C] from the iterable
  `images`, read `batch_size` at a time: one [n, K] array per batch, in
  order (a few batches are in memory at once: device_axis.PREFETCH), from
  the logits averaged over `tta`'s views (tta.tta_views)."""
  devices = device_axis.local_devices(devices)
  p_predict = device_axis.pmap_step(
      functools.partial(steps.predict_step, tta=tta),
      out_axes=device_axis.PER_EXAMPLE, devices=devices)

  def batches():
    chunk = []
    for image in images:
      chunk.append(image)
      if len(chunk) == batch_size:
        yield _model_input(chunk, normalization)
        chunk = []
    if chunk:
      yield _model_input(chunk, normalization)

  padded = device_axis.pad_batches(batches(), len(devices))
  for batch in device_axis.to_devices(padded, devices):
    preemption.raise_if_swallowed()  # a stop lost in the start-up
    yield device_axis.real_examples(
        [dict(probs=p_predict(state, batch), mask=batch['mask'])])['probs']


def _model_input(chunk, normalization):
  images = preprocess.to_unit_float(np.stack(chunk))
  return {'image': preprocess.normalize(images, normalization).numpy()}


def predict_images(config, workdir: str, images: str, step=None) -> dict:
  """Classifies the files named by `images` with a checkpoint of `workdir`.

  Prints one line per file (top-k classes and probabilities, or why it was
  skipped), writes <workdir>/predictions_step<N>.csv once it is complete
  (predictions_step<N>_run2.csv, _run3, ... where an earlier run's is there:
  `csv_name`) and returns
  {'step', 'csv', 'predictions': [{'file', 'top_k': [[class, p], ...]}],
   'skipped': [{'file', 'error'}]}.
  """
  workdir = os.path.abspath(workdir)
  paths = image_paths(images)
  loaded = checkpoint_loader.load(workdir, step, config, mode='predict')
  step, class_names = loaded.step, loaded.class_names
  k = min(loaded.report.top_k, len(class_names))
  # A name of its own per run (the first process's), taken when complete.
  partial = os.path.join(workdir, f'predictions_step{step}.csv.partial.'
                         f'{os.getpid()}')
  csv_path = None
  predictions, skipped = [], []
  # With several processes each predicts every image (its devices' share of
  # each batch); the first prints and writes.
  primary = distributed.is_primary()
  show = print if primary else (lambda *args: None)
  try:
    with open(partial if primary else os.devnull, 'w', newline='') as f:
      out = csv.writer(f)
      out.writerow(['file'] + [x for j in range(k)
                               for x in (f'class_{j + 1}', f'prob_{j + 1}')] +
                   ['error'])
      for row in _rows(paths, loaded, k, images):
        if 'error' in row:
          skipped.append(row)
          out.writerow([row['file']] + [''] * (2 * k) + [row['error']])
          show(f'{row["file"]}\tskipped: {row["error"]}')
        else:
          predictions.append(row)
          out.writerow([row['file']] + [x for name, p in row['top_k']
                                        for x in (name, f'{p:.6f}')] + [''])
          show(row['file'] + '\t' + '\t'.join(
              f'{name} {p:.4f}' for name, p in row['top_k']))
    if primary:
      csv_path = _keep(partial, workdir, step)
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  written = '' if csv_path is None else f'; written to {csv_path}'
  if csv_path not in (None, os.path.join(workdir, csv_name(step))):
    written += f' (a new name: {csv_name(step)} holds an earlier run\'s)'
  logging.info('Predicted %d image(s) with checkpoint step %d (%d skipped)%s.',
               len(predictions), step, len(skipped), written)
  return {'step': step, 'csv': csv_path, 'predictions': predictions,
          'skipped': skipped}


def csv_name(step: int, run: int = 1) -> str:
  """The name of predict's CSV for checkpoint `step`: predictions_step<N>.csv
  for the first run, predictions_step<N>_run<run>.csv for later ones."""
  return f'predictions_step{step}' + (f'_run{run}' if run > 1 else '') + '.csv'


def _keep(partial: str, workdir: str, step: int) -> str:
  """Gives the finished CSV `partial` the first csv_name not taken (never
  over an earlier run's, also one finishing at the same time: a hard link
  fails where the name exists); returns its path."""
  for run in itertools.count(1):
    path = os.path.join(workdir, csv_name(step, run))
    try:
      os.link(partial, path)
    except FileExistsError:
      continue
    except OSError:  # a filesystem without hard links
      if os.path.lexists(path):
        continue
      os.replace(partial, path)
      return path
    os.remove(partial)
    return path


def _rows(paths, loaded, k: int, spec: str):
  """{'file', 'top_k'} or {'file', 'error'} for each of `paths`, in order,
  batch by batch. Raises UserError, before any row, if no file is readable."""
  size, channels = loaded.image_shape[0], loaded.image_shape[-1]
  entries = collections.deque()  # (path, error or None), in path order

  def decoded():
    for path in paths:
      try:
        image = load_image(path, size, channels, loaded.config.crop)
      except tf.errors.OpError as e:
        reason = preprocess.decode_error_reason(e)
        logging.warning('Skipping %s: cannot read it as an image (%s).', path,
                        reason)
        entries.append((path, f'cannot read image: {reason}'))
        continue
      entries.append((path, None))
      yield image

  def skipped_rows():
    while entries and entries[0][1] is not None:
      path, error = entries.popleft()
      yield {'file': path, 'error': error}

  any_read = False
  for probs in probabilities(loaded.state, decoded(), loaded.normalization,
                             loaded.config.eval_batch_size,
                             tta=loaded.report.tta):
    any_read = True
    for p, order in zip(probs, predictions.top_classes(probs, k)):
      yield from skipped_rows()
      path, _ = entries.popleft()
      yield {'file': path, 'top_k': [[loaded.class_names[c], float(p[c])]
                                     for c in order]}
    sys.stdout.flush()
  if not any_read:
    path, error = entries[0]
    raise UserError(
        f'none of the {len(paths)} file(s) named by --images={spec} could be '
        f'read as an image (first: {path}: {error}): give JPEG, PNG, BMP or GIF '
        'files.')
  yield from skipped_rows()
