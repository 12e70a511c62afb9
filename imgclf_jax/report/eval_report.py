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
"""

import os

from absl import logging
from clu import metric_writers
import numpy as np
from PIL import Image

from imgclf_jax.report import plots
from imgclf_jax.report import predictions

# Fixed seed of the random sample shown in the predictions grid.
GRID_SEED = 0


def file_safe(name: str) -> str:
  """`name` (a split such as 'test[:50%]') as a file-name part."""
  return ''.join(c if c.isalnum() or c in '-_' else '_' for c in name)


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
  top = predictions.top_classes(probs, k)
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
  # With k = K every class is among the top k: always 1, so n/a (None).
  return {'top_k': k,
          'top_k_accuracy': top_k_accuracy(outputs['probs'], outputs['label'],
                                           k) if k < num_classes else None,
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
  k, top = report['top_k'], report['top_k_accuracy']
  top = (f'{top:.4f}' if top is not None else
         f'n/a (top_k={k}: every class is in the top {k})')
  lines.append(f'accuracy {accuracy:.4f}, loss {loss:.4f}, top-{k} accuracy '
               f'{top}, {total} examples')
  missing = report.get('classes_without_support')
  if missing:
    lines.append(f'no examples of {", ".join(missing)} in this split: n/a, '
                 'left out of the averages')
  return '\n'.join(lines)


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
  predictions.write_predictions_csv(written['predictions_csv'], outputs, class_names,
                        report['top_k'], files)
  layouts = {'confusion_matrix': plots.plot_confusion_matrix(
      report['confusion_matrix'], class_names, written['confusion_matrix'],
      title=title)}
  titles = {'grid': f'predictions on a fixed sample ({title})',
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
