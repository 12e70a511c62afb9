"""class_distribution.png/.json: examples per class of the training and
validation splits, written before training, with a warning when the
imbalance is large or a class has no validation example."""

import json
import os

from absl import logging

from imgclf_jax import whole_file
from imgclf_jax.data import imbalance
from imgclf_jax.report import plots

CLASS_DISTRIBUTION = 'class_distribution'


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


def write_class_distribution(pipeline, workdir: str) -> dict:
  """class_distribution.png and .json for the training and validation splits.

  Logs a warning (imbalance.describe, with the pipeline's settings) when the
  training split's largest class has more than imbalance_warning_ratio
  times the smallest's examples, and one naming the classes without
  validation examples.
  Returns the JSON's content and, not written, the chart's layout.
  """
  class_names = list(pipeline.source.info.class_names)
  counts = {split: pipeline.class_counts(split)
            for split in ('train', 'validation')}
  summary = imbalance.describe(counts['train'], class_names,
                               pipeline.spec.imbalance)
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
  with whole_file.replacing(os.path.join(workdir,
                                         CLASS_DISTRIBUTION + '.json')) as f:
    json.dump(result, f, indent=2)
  return {**result, 'layout': layout}
