"""--mode=eval: evaluate a checkpoint on a split and write its report.

    python main.py --workdir=runs/cifar10 --mode=eval [--step=best]

The report (report.py) goes beside the results JSON: per-class metrics,
top-k accuracy, confusion matrix, example pictures.
"""

import json
import os

from absl import logging

from imgclf_jax import checkpoints
from imgclf_jax import datasets
from imgclf_jax import eval_loop
from imgclf_jax import inference
from imgclf_jax import input_pipeline
from imgclf_jax import metrics as metrics_lib
from imgclf_jax import report


def evaluate_checkpoint(config, workdir: str, step=None) -> dict:
  """Evaluates checkpoint `step` of `workdir` on config.eval_split.

  `config` may be None: then the checkpoint's own config is used as is.
  Writes `<workdir>/eval_<split>_step<step>.json` and returns its content
  and, under 'layout', where the report's pictures show what (plots.py).
  """
  workdir = os.path.abspath(workdir)
  loaded = inference.load(workdir, step, config, mode='eval')
  config, step, metadata = loaded.config, loaded.step, loaded.metadata
  source = datasets.make_source(config)
  checkpoints.check_class_names(source.info.class_names, loaded.class_names,
                                loaded.directory)
  pipeline = input_pipeline.InputPipeline(source, config,
                                          loaded.normalization)
  split = config.eval_split
  sizes = source.split_sizes()
  if (split == 'validation' and config.dataset == metadata['dataset'] and
      metadata['split_sizes'] != sizes):
    logging.warning(
        'The dataset or its split settings changed since this checkpoint was '
        'trained (examples per split: then %s, now %s): a validation split '
        'held out of the training images may now hold images it was trained '
        'on.', metadata['split_sizes'], sizes)
  if config.tta != 'none':
    logging.info('Test-time augmentation: %s (steps.tta_views).', config.tta)
  total, outputs = eval_loop.evaluate_split_with_outputs(
      loaded.state, pipeline.eval_batches(split), tta=config.tta)
  values = metrics_lib.to_floats(total, '')
  numbers = report.build(outputs, source.info.class_names, config.top_k)
  logging.info('Evaluation of step %d on %s[%s]:\n%s', step, source.info.name,
               split, report.format_table(numbers, values['accuracy'],
                                          values['loss']))
  prefix = os.path.join(workdir, f'eval_{report.file_safe(split)}_step{step}')
  pictures, layouts = report.write_report(
      outputs, numbers, pipeline, split, prefix, step, config.report_images,
      title=f'{split}, step {step}', values=values)
  result = {'step': step, 'epoch': metadata['epoch'],
            'dataset': source.info.name, 'split': split, 'tta': config.tta,
            'num_examples': source.num_examples(split),
            **values, **numbers, **pictures}
  with open(prefix + '.json', 'w') as f:
    json.dump(result, f, indent=2)
  logging.info('Evaluation results written to %s.json', prefix)
  return {**result, 'layout': layouts}


def summary(result: dict) -> dict:
  """The result without its per-example lists and matrix (for printing)."""
  return {k: v for k, v in result.items()
          if k not in ('examples', 'confusion_matrix', 'layout')}
