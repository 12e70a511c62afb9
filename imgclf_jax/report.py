"""What the program tells about a model and its data, besides its metrics.

The evaluation report of --mode=eval: from the outputs of one pass over a
split (eval_loop.evaluate_split_with_outputs: per-example probabilities next
to the usual device-side loss/accuracy sums) it computes, on the host,
per-class precision, recall, F1 and support, macro and weighted averages
over the classes present in the split (n/a for a class without examples),
top-k accuracy and the confusion matrix (rows: true class, columns:
predicted), and picks the examples to show: a fixed random sample (the
predictions grid), the most confidently wrong predictions and the least
confident right ones. `write_report` turns that into files next to the eval
JSON and into TensorBoard.

Training's insights: class_distribution.png/.json (examples per class of the
training and validation splits, written before training, with a warning when
the imbalance is large or a class has no validation example) and the epoch
where overfitting starts (a sustained trend of the smoothed curves;
curves.png, the log).
"""

import csv
import json
import os

from absl import logging
from clu import metric_writers
import numpy as np
from PIL import Image

from imgclf_jax import imbalance
from imgclf_jax import plots

# Fixed seed of the random sample shown in the predictions grid.
GRID_SEED = 0


def file_safe(name: str) -> str:
  """`name` (a split such as 'test[:50%]') as a file-name part."""
  return ''.join(c if c.isalnum() or c in '-_' else '_' for c in name)


def top_classes(probs, k: int) -> np.ndarray:
  """[N, min(k, K)] class indices, most probable first (ties: lower index)."""
  probs = np.asarray(probs)
  return np.argsort(-probs, axis=1, kind='stable')[:, :min(k, probs.shape[1])]


# ----------------------------------------------------------------------------
# Numbers


def confusion_matrix(labels, predicted, num_classes: int) -> np.ndarray:
  """[K, K] counts; row = true class, column = predicted class."""
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
  return matrix


def per_class_metrics(matrix, class_names) -> dict:
  """{class: {precision, recall, f1, support}}.

  A class without support (no example of it in the split) has no recall
  and no F1: they are None (n/a), and so is its precision unless the model
  predicted it (then 0: every such prediction is wrong). A class with
  support but no prediction has precision 0.
  """
  matrix = np.asarray(matrix, np.float64)
  tp = np.diag(matrix)
  support = matrix.sum(axis=1)
  predicted = matrix.sum(axis=0)
  precision = np.divide(tp, predicted, out=np.zeros_like(tp),
                        where=predicted > 0)
  recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
  denom = precision + recall
  f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp),
                 where=denom > 0)
  result = {}
  for i, name in enumerate(class_names):
    supported = support[i] > 0
    result[name] = {
        'precision': (float(precision[i]) if supported or predicted[i] > 0
                      else None),
        'recall': float(recall[i]) if supported else None,
        'f1': float(f1[i]) if supported else None,
        'support': int(support[i])}
  return result


def averages(per_class: dict) -> dict:
  """Macro (unweighted) and support-weighted means of precision/recall/F1
  over the classes with support (a class absent from the split has nothing
  to average), and which classes those left out."""
  rows = [r for r in per_class.values() if r['support'] > 0]
  support = np.array([r['support'] for r in rows], np.float64)
  result = {}
  for name, weights in (('macro_avg', np.ones_like(support)),
                        ('weighted_avg', support)):
    total = weights.sum()
    result[name] = {
        key: float(np.dot(weights, [r[key] for r in rows]) / total)
        if total else None for key in ('precision', 'recall', 'f1')}
  result['classes_without_support'] = [
      name for name, r in per_class.items() if r['support'] == 0]
  return result


def top_k_accuracy(probs, labels, k: int) -> float:
  """Fraction of examples whose true class is among the k most probable."""
  top = top_classes(probs, k)
  return float(np.mean(np.any(top == np.asarray(labels)[:, None], axis=1)))


def select_examples(outputs, n: int) -> dict:
  """Indices (into the split) of the examples each picture shows.

  grid: a fixed random sample of n, in split order; confident_mistakes: the
  n wrong predictions with the highest confidence, most confident first;
  unsure_correct: the n right ones with the lowest confidence, least first.
  """
  labels, predicted = outputs['label'], outputs['predicted']
  confidence = outputs['confidence']
  count = len(labels)
  rng = np.random.default_rng(GRID_SEED)
  grid = np.sort(rng.choice(count, size=min(n, count), replace=False))
  wrong = np.flatnonzero(predicted != labels)
  right = np.flatnonzero(predicted == labels)
  wrong = wrong[np.argsort(-confidence[wrong], kind='stable')][:n]
  right = right[np.argsort(confidence[right], kind='stable')][:n]
  return {'grid': grid.tolist(), 'confident_mistakes': wrong.tolist(),
          'unsure_correct': right.tolist()}


def build(outputs, class_names, top_k: int) -> dict:
  """The report's numbers (JSON-ready)."""
  num_classes = len(class_names)
  matrix = confusion_matrix(outputs['label'], outputs['predicted'],
                            num_classes)
  per_class = per_class_metrics(matrix, class_names)
  k = min(top_k, num_classes)
  return {'top_k': k,
          'top_k_accuracy': top_k_accuracy(outputs['probs'], outputs['label'],
                                           k),
          'per_class': per_class, **averages(per_class),
          'class_names': list(class_names),
          'confusion_matrix': matrix.tolist()}


def _number(value, width: int) -> str:
  return f'{"n/a":>{width}}' if value is None else f'{value:{width}.4f}'


def format_table(report: dict, accuracy: float, loss: float) -> str:
  """The per-class table as aligned text, for the log (n/a: undefined for
  a class without support; the averages leave such classes out)."""
  names = list(report['per_class'])
  width = max(12, *(len(n) for n in names))
  lines = [f'{"class":<{width}}  precision  recall      f1  support']
  for name, row in report['per_class'].items():
    lines.append(f'{name:<{width}}  {_number(row["precision"], 9)}  '
                 f'{_number(row["recall"], 6)}  {_number(row["f1"], 6)}  '
                 f'{row["support"]:7d}')
  for avg in ('macro_avg', 'weighted_avg'):
    row = report[avg]
    lines.append(f'{avg:<{width}}  {_number(row["precision"], 9)}  '
                 f'{_number(row["recall"], 6)}  {_number(row["f1"], 6)}')
  total = sum(r['support'] for r in report['per_class'].values())
  lines.append(f'accuracy {accuracy:.4f}, loss {loss:.4f}, top-{report["top_k"]}'
               f' accuracy {report["top_k_accuracy"]:.4f}, {total} examples')
  missing = report.get('classes_without_support')
  if missing:
    lines.append(f'no examples of {", ".join(missing)} in this split: n/a, '
                 'left out of the averages')
  return '\n'.join(lines)


# ----------------------------------------------------------------------------
# Files


def fetch_images(pipeline, split: str, indices) -> dict:
  """{index: uint8 image} of `split`, resized as the model saw them but not
  normalised (InputPipeline.resized_subset)."""
  wanted = sorted(set(int(i) for i in indices))
  if not wanted:
    return {}
  images = pipeline.resized_subset(split, wanted).as_numpy_iterator()
  return {i: image for i, (image, _) in zip(wanted, images, strict=True)}


def _caption(class_names, label, predicted, confidence):
  return (f'true: {class_names[label]}\npred: {class_names[predicted]} '
          f'{confidence:.0%}')


def _entries(indices, outputs, class_names, files):
  confidence = outputs['confidence']
  entries = []
  for i in indices:
    entry = {'index': int(i),
             'true': class_names[outputs['label'][i]],
             'predicted': class_names[outputs['predicted'][i]],
             'confidence': float(confidence[i]),
             'correct': bool(outputs['label'][i] == outputs['predicted'][i])}
    if files is not None:
      entry['file'] = str(files[i])
    entries.append(entry)
  return entries


def write_predictions_csv(path, outputs, class_names, top_k: int, files=None):
  """One row per example: index, file, true, predicted, confidence, correct,
  and the top-k classes with their probabilities."""
  probs, confidence = outputs['probs'], outputs['confidence']
  top = top_classes(probs, top_k)
  k = top.shape[1]
  with open(path, 'w', newline='') as f:
    out = csv.writer(f)
    out.writerow(['index', 'file', 'true', 'predicted', 'confidence',
                  'correct'] + [f'top{j + 1}' for j in range(k)])
    for i in range(len(probs)):
      out.writerow(
          [i, '' if files is None else files[i],
           class_names[outputs['label'][i]],
           class_names[outputs['predicted'][i]], f'{confidence[i]:.6f}',
           int(outputs['label'][i] == outputs['predicted'][i])] +
          [f'{class_names[c]}:{probs[i, c]:.6f}' for c in top[i]])


def write_report(outputs, report: dict, pipeline, split: str, prefix: str,
                 step: int, n_images: int, title: str, values: dict) -> dict:
  """Writes the report's pictures, CSV and TensorBoard entries.

  `prefix` is the path without extension (e.g. <workdir>/eval_test_step120);
  `values` are the split's loss and accuracy (TensorBoard scalars).
  Returns ({'files': {...}, 'examples': {picture: [entries]}} for the JSON,
  the pictures' layouts (plots.py) for whoever checks them).
  """
  class_names = report['class_names']
  files = pipeline.source.files(split)
  chosen = select_examples(outputs, n_images)
  images = fetch_images(pipeline, split, sum(chosen.values(), []))
  written = {'predictions_csv': prefix + '_predictions.csv',
             'confusion_matrix': prefix + '_confusion.png',
             'grid': prefix + '_examples.png',
             'confident_mistakes': prefix + '_confident_mistakes.png',
             'unsure_correct': prefix + '_unsure_correct.png'}
  write_predictions_csv(written['predictions_csv'], outputs, class_names,
                        report['top_k'], files)
  layouts = {'confusion_matrix': plots.plot_confusion_matrix(
      report['confusion_matrix'], class_names, written['confusion_matrix'],
      title=title)}
  titles = {'grid': f'predictions on a random sample ({title})',
            'confident_mistakes': f'most confident mistakes ({title})',
            'unsure_correct': f'least confident correct predictions ({title})'}
  empty = {'grid': 'no examples', 'confident_mistakes': 'no mistakes',
           'unsure_correct': 'no correct predictions'}
  examples = {}
  confidence = outputs['confidence']
  for name, indices in chosen.items():
    examples[name] = _entries(indices, outputs, class_names, files)
    shape = pipeline.image_shape
    layouts[name] = plots.plot_image_grid(
        np.stack([images[i] for i in indices]) if indices else
        np.zeros((0, *shape), np.uint8),
        [_caption(class_names, outputs['label'][i], outputs['predicted'][i],
                  confidence[i]) for i in indices],
        [e['correct'] for e in examples[name]], written[name],
        title=titles[name], empty_message=empty[name])
  _write_tensorboard(os.path.dirname(prefix), split, step, report, written,
                     values)
  return ({'files': {k: os.path.basename(v) for k, v in written.items()},
           'examples': examples}, layouts)


def _write_tensorboard(workdir, split, step, report, written, values):
  """Scalars and the pictures under <workdir>/eval_<split> (a TensorBoard run)."""
  writer = metric_writers.create_default_writer(
      os.path.join(workdir, f'eval_{file_safe(split)}'), just_logging=False,
      asynchronous=False)
  scalars = {**values,
             f'top_{report["top_k"]}_accuracy': report['top_k_accuracy'],
             'macro_f1': report['macro_avg']['f1']}
  for name, row in report['per_class'].items():
    scalars[f'recall/{name}'] = row['recall']
    scalars[f'precision/{name}'] = row['precision']
  writer.write_scalars(step, {k: v for k, v in scalars.items()
                              if v is not None})  # n/a: not written
  images = {}
  for name in ('confusion_matrix', 'grid', 'confident_mistakes',
               'unsure_correct'):
    with Image.open(written[name]) as png:
      images[name] = np.asarray(png.convert('RGB'))[None]
  writer.write_images(step, images)
  writer.flush()
  writer.close()
  logging.info('Evaluation report of %s written: %s', split,
               ', '.join(os.path.basename(v) for v in written.values()))


# ----------------------------------------------------------------------------
# Training's insights: class distribution and overfitting

CLASS_DISTRIBUTION = 'class_distribution'


# Overfitting is read from the curves smoothed by a centred mean over
# SMOOTHING epochs. It starts at the first epoch of OVERFIT_PATIENCE
# consecutive epochs in which, compared with the epoch of the lowest
# validation loss before them, the validation loss is higher by more than
# OVERFIT_TOLERANCE (relative), the gap validation minus training loss is
# wider by more than OVERFIT_TOLERANCE times that minimum, and (at the last
# of them) the training loss is lower. A wobble of the validation loss, or a
# rise of both losses together, is not overfitting.
SMOOTHING = 3
OVERFIT_PATIENCE = 3
OVERFIT_TOLERANCE = 0.01


def _smoothed(values) -> np.ndarray:
  """The centred mean over SMOOTHING epochs (fewer at the ends)."""
  values = np.asarray(values, np.float64)
  half = SMOOTHING // 2
  return np.array([values[max(0, i - half):i + half + 1].mean()
                   for i in range(len(values))])


def overfitting(records: list[dict]):
  """Where overfitting starts (see OVERFIT_PATIENCE), or None.

  `records` are metrics.jsonl lines (epoch, train_loss, validation_loss).
  Returns {'epoch': first epoch of the trend, 'best_epoch': the epoch of
  the validation-loss minimum before it, 'epochs': how many consecutive
  epochs from 'epoch' on stay above that minimum, and the smoothed
  'validation_loss', 'train_loss' and 'gap' at best_epoch and at the end of
  that stretch, as [then, later]}.
  """
  if len(records) < OVERFIT_PATIENCE + 1:
    return None
  val = _smoothed([r['validation_loss'] for r in records])
  train = _smoothed([r['train_loss'] for r in records])
  gap = val - train
  for start in range(1, len(records) - OVERFIT_PATIENCE + 1):
    best = int(np.argmin(val[:start]))
    margin = OVERFIT_TOLERANCE * abs(val[best])
    above = val > val[best] + margin
    wider = gap > gap[best] + margin
    stretch = range(start, start + OVERFIT_PATIENCE)
    if (all(above[i] and wider[i] for i in stretch) and
        train[stretch[-1]] < train[best]):
      end = start
      while end + 1 < len(records) and above[end + 1]:
        end += 1
      return {'epoch': int(records[start]['epoch']),
              'best_epoch': int(records[best]['epoch']),
              'epochs': end - start + 1,
              'end_epoch': int(records[end]['epoch']),
              'validation_loss': [float(val[best]), float(val[end])],
              'train_loss': [float(train[best]), float(train[end])],
              'gap': [float(gap[best]), float(gap[end])]}
  return None


def overfitting_epoch(records: list[dict]):
  """The epoch where overfitting starts (`overfitting`), or None."""
  found = overfitting(records)
  return found and found['epoch']


def log_overfitting(records: list[dict]):
  """Logs where overfitting starts, or that none is seen; returns the epoch
  or None."""
  found = overfitting(records)
  if found:
    logging.info(
        'Overfitting starts at epoch %d: over %d consecutive epochs (to epoch '
        '%d) the validation loss (mean of %d epochs) stays above its minimum '
        'at epoch %d (%.4f -> %.4f), while the training loss falls (%.4f -> '
        '%.4f) and the gap between them widens (%.4f -> %.4f). The best '
        'checkpoint by validation accuracy is kept (--mode=eval --step=best).',
        found['epoch'], found['epochs'], found['end_epoch'], SMOOTHING,
        found['best_epoch'], *found['validation_loss'], *found['train_loss'],
        *found['gap'])
    return found['epoch']
  if len(records) >= 2:
    logging.info(
        'No overfitting seen: the validation loss (mean of %d epochs) has not '
        'stayed above its minimum for %d epochs while the training loss fell '
        'and the gap between them widened.', SMOOTHING, OVERFIT_PATIENCE)
  return None


def warn_unvalidated_classes(validation_counts, train_counts,
                             class_names) -> list[str]:
  """Logs a warning naming the classes that have no validation example
  (the validation accuracy says nothing about them, and the eval report
  marks their precision, recall and F1 n/a); returns their names."""
  missing = [i for i, n in enumerate(validation_counts) if n == 0]
  names = [class_names[i] for i in missing]
  if names:
    logging.warning(
        'No validation examples of %d class(es): %s. Validation says nothing '
        'about them, and the eval report marks them n/a (left out of the '
        'macro averages). Give each class at least 2 images (a folder holds '
        'out validation_fraction of each, at least one where it has 2), or '
        'images in its validation folder.', len(names), ', '.join(
            f'{class_names[i]} ({int(train_counts[i])} training)'
            for i in missing))
  return names


def write_class_distribution(pipeline, config, workdir: str) -> dict:
  """class_distribution.png and .json for the training and validation splits.

  Logs a warning (imbalance.describe) when the training split's largest class
  has more than config.imbalance_warning_ratio times the smallest's examples,
  and one naming the classes without validation examples.
  Returns the JSON's content and, not written, the chart's layout.
  """
  class_names = list(pipeline.source.info.class_names)
  counts = {split: pipeline.class_counts(split)
            for split in ('train', 'validation')}
  summary = imbalance.describe(counts['train'], class_names, config)
  summary['classes_without_validation'] = warn_unvalidated_classes(
      counts['validation'], counts['train'], class_names)
  path = os.path.join(workdir, CLASS_DISTRIBUTION + '.png')
  ratio = summary['imbalance_ratio']
  layout = plots.plot_class_distribution(
      class_names, counts, path,
      title=('examples per class (train imbalance ratio '
             f'{ratio:.1f})' if ratio is not None else
             'examples per class (a class has no training examples)'))
  result = {'class_names': class_names,
            **{split: [int(c) for c in v] for split, v in counts.items()},
            **summary}
  with open(os.path.join(workdir, CLASS_DISTRIBUTION + '.json'), 'w') as f:
    json.dump(result, f, indent=2)
  return {**result, 'layout': layout}
