"""--mode=eval: evaluate a checkpoint on a split and write its report.

    python main.py --workdir=runs/cifar10 --mode=eval [--step=best]

The report (eval_report.py) goes beside the results JSON: per-class metrics,
top-k accuracy, confusion matrix, example pictures.
"""

import json
import os

from absl import logging

from imgclf_jax import whole_file
from imgclf_jax.checkpoints import checkpoint_store
from imgclf_jax.config import specs
from imgclf_jax.data import input_pipeline
from imgclf_jax.data import sources
from imgclf_jax.errors import UserError
from imgclf_jax.modes import checkpoint_loader
from imgclf_jax.parallel import distributed
from imgclf_jax.report import eval_report
from imgclf_jax.training import eval_loop
from imgclf_jax.training import metrics as metrics_lib


def evaluate_checkpoint(config, workdir: str, step=None, set_keys=None
                        ) -> dict:
  """Evaluates checkpoint `step` of `workdir` on config.eval_split.

  `config` may be None: then the checkpoint's own config is used as is.
  `set_keys`: the keys of `config` set on the command line; a config file
  whose dataset is not the checkpoint's does not replace it unless
  'dataset' is among them (None: every key of `config` counts as set).
  Writes `<workdir>/eval_<split>_step<step>.json` and returns its content
  and, under 'layout', where the report's pictures show what (plots.py).
  """
  workdir = os.path.abspath(workdir)
  loaded = checkpoint_loader.load(workdir, step, config, mode='eval',
                          set_keys=set_keys)
  config, step, metadata = loaded.config, loaded.step, loaded.metadata
  report = loaded.report
  split = config.eval_split
  logging.info('Evaluating checkpoint step %d on dataset %s, split %s%s.',
               step, config.dataset, split,
               '' if config.dataset == metadata['dataset'] else
               f' (trained on {metadata["dataset"]})')
  data = specs.data_spec(config)
  source = sources.make_source(data.source, class_names=loaded.class_names)
  checkpoint_store.check_class_names(source.info.class_names, loaded.class_names,
                                loaded.directory)
  pipeline = input_pipeline.InputPipeline(source, data, loaded.normalization,
                                          training=False)
  if split == 'validation' and config.dataset == metadata['dataset']:
    _warn_if_splits_changed(source, metadata['split_sizes'], step,
                            loaded.directory)
  if report.tta != 'none':
    logging.info('Test-time augmentation: %s (tta.tta_views).', report.tta)
  batches, padding = pipeline.eval_share(split)
  total, outputs = eval_loop.evaluate_split_with_outputs(
      loaded.state, batches, tta=report.tta, padding=padding)
  # With several processes: every process's outputs, in the split's order,
  # on every process; the first writes the report.
  outputs = distributed.gather_examples(outputs)
  values = metrics_lib.to_floats(total, '')
  numbers = eval_report.build(outputs, source.info.class_names, report.top_k)
  logging.info('Evaluation of step %d on %s[%s]:\n%s', step, source.info.name,
               split, eval_report.format_table(numbers, values['accuracy'],
                                          values['loss']))
  prefix = os.path.join(workdir, f'eval_{eval_report.file_safe(split)}_step{step}')
  if not distributed.is_primary():
    return {'step': step, 'split': split, **values}
  pictures, layouts = eval_report.write_report(
      outputs, numbers, pipeline, split, prefix, step, report.report_images,
      title=f'{split}, step {step}', values=values)
  result = {'step': step, 'epoch': metadata['epoch'],
            'dataset': source.info.name, 'split': split, 'tta': report.tta,
            'num_examples': source.num_examples(split),
            **values, **numbers, **pictures}
  with whole_file.replacing(prefix + '.json') as f:
    json.dump(result, f, indent=2)
  logging.info('Evaluation results written to %s.json', prefix)
  return {**result, 'layout': layouts}


def _warn_if_splits_changed(source, saved_sizes: dict, step: int,
                            directory: str):
  """Warns when the checkpoint's own dataset no longer has the split sizes
  it was trained with (checkpoint_store.split_sizes_change: a held-out
  validation split may then hold training images); silent where its train
  split is no longer there to count."""
  try:
    sizes = source.split_sizes()
  except UserError:
    return
  change = checkpoint_store.split_sizes_change(saved_sizes, sizes, directory)
  if change:
    logging.warning('Evaluating checkpoint step %d: %s: a validation split '
                    'held out of the training images may now hold images it '
                    'was trained on.', step, change)


def summary(result: dict) -> dict:
  """The result without its per-example lists and matrix (for printing)."""
  return {k: v for k, v in result.items()
          if k not in ('examples', 'confusion_matrix', 'layout')}
