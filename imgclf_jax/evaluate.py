"""Evaluation: metrics over a split, and --mode=eval from a checkpoint.

--mode=eval writes the evaluation report (report.py) beside its JSON:
per-class metrics, top-k accuracy, confusion matrix, example pictures.
"""

import json
import os

from absl import logging
from flax import jax_utils
import jax
import ml_collections

from imgclf_jax import checkpoints
from imgclf_jax import config_checks
from imgclf_jax import datasets
from imgclf_jax import input_pipeline
from imgclf_jax import metrics as metrics_lib
from imgclf_jax import models
from imgclf_jax import report
from imgclf_jax import steps
from imgclf_jax import train_state as train_state_lib

# Keys --mode=eval takes from the command-line config; the rest (the model and
# its preprocessing) always come from the checkpoint.
DATA_KEYS = ('dataset', 'data_dir', 'train_split', 'validation_split',
             'validation_fraction', 'eval_split', 'eval_batch_size', 'cache')
# Keys of the report and of prediction, also taken from the command line.
REPORT_KEYS = ('top_k', 'report_images')


def _eval_pass(p_step, state, pipeline, split: str):
  """Yields p_step's output for each batch of `split` (prefetched to device)."""
  for batch in jax_utils.prefetch_to_device(pipeline.eval_batches(split), 2):
    yield p_step(state, batch)


def evaluate_split(p_eval_step, state, pipeline, split: str):
  """Metrics over every example of `split` (device-side accumulation);
  `p_eval_step` is steps.pmap_eval_step's."""
  total = metrics_lib.Accumulator()
  for batch_metrics in _eval_pass(p_eval_step, state, pipeline, split):
    total.add(batch_metrics)
  return total.result()


def evaluate_split_with_outputs(p_eval_outputs_step, state, pipeline,
                                split: str):
  """(metrics, per-example outputs) over every example of `split`.

  `p_eval_outputs_step` is steps.pmap_eval_outputs_step's; the outputs stay
  on the devices until the pass ends, then report.real_examples keeps the
  real (mask 1) examples.
  """
  total, pieces = metrics_lib.Accumulator(), []
  for batch_metrics, outputs in _eval_pass(p_eval_outputs_step, state,
                                           pipeline, split):
    total.add(batch_metrics)
    pieces.append(outputs)
  return total.result(), report.real_examples(pieces)


def eval_config(saved_config: dict, config,
                keys=DATA_KEYS + REPORT_KEYS) -> ml_collections.ConfigDict:
  """The checkpoint's config with the data keys of `config` (if given).

  Keys added to configs/default.py after the checkpoint was written get
  their default values.
  """
  from configs import default  # pylint: disable=g-import-not-at-top
  merged = ml_collections.ConfigDict(saved_config)
  for key, value in default.get_config().items():
    if key not in merged:
      merged[key] = value
  if config is not None:
    for key in keys:
      merged[key] = config[key]
  merged.dataset = datasets.canonical_dataset(merged.dataset)
  return merged


def evaluate_checkpoint(config, workdir: str, step=None) -> dict:
  """Restores a checkpoint of `workdir` and evaluates it on config.eval_split.

  `config` may be None: then the checkpoint's own config is used as is.
  Writes `<workdir>/eval_<split>_step<step>.json` and returns its content.
  """
  workdir = os.path.abspath(workdir)
  store = checkpoints.CheckpointStore(workdir)
  try:
    step, metadata = store.restore_metadata(step)
    saved = metadata['config']
    if config is not None:
      ignored = checkpoints.differences(
          saved, config, ('model', 'image_size', 'normalization'))
      if ignored:
        logging.warning('--mode=eval uses the model of the checkpoint, not '
                        'that of --config (%s).', ', '.join(ignored))
    given = config
    config = eval_config(saved, config)
    num_devices = jax.local_device_count()
    if given is None and config.eval_batch_size % num_devices:
      # The checkpoint's own batch, from a machine with another device count:
      # any multiple of this one's gives the same metrics.
      config.eval_batch_size = max(
          num_devices, config.eval_batch_size // num_devices * num_devices)
      logging.info('eval_batch_size %d (a multiple of the %d devices).',
                   config.eval_batch_size, num_devices)
    config_checks.validate(config, num_devices, training=False)
    source = datasets.make_source(config)
    checkpoints.check_class_names(source.info.class_names,
                                  metadata['class_names'], store.directory)
    pipeline = input_pipeline.InputPipeline(
        source, config, num_devices, metadata['normalization'])
    state = restore_state(store, step, config, source.info.num_classes,
                          pipeline.image_shape)
  finally:
    store.close()

  split = config.eval_split
  saved_sizes, sizes = metadata.get('split_sizes'), source.split_sizes()
  if (split == 'validation' and config.dataset == saved['dataset'] and
      saved_sizes is not None and saved_sizes != sizes):
    logging.warning(
        'The dataset or its split settings changed since this checkpoint was '
        'trained (examples per split: then %s, now %s): a validation split '
        'held out of the training images may now hold images it was trained '
        'on.', saved_sizes, sizes)
  total, outputs = evaluate_split_with_outputs(
      steps.pmap_eval_outputs_step(), state, pipeline, split)
  values = metrics_lib.to_floats(total, '')
  numbers = report.build(outputs, source.info.class_names, config.top_k)
  logging.info('Evaluation of step %d on %s[%s]:\n%s', step, source.info.name,
               split, report.format_table(numbers, values['accuracy'],
                                          values['loss']))
  prefix = os.path.join(workdir, f'eval_{report.file_safe(split)}_step{step}')
  pictures = report.write_report(
      outputs, numbers, pipeline, split, prefix, step, config.report_images,
      title=f'{split}, step {step}', values=values)
  result = {'step': step, 'epoch': metadata['epoch'], 'dataset': source.info.name,
            'split': split, 'num_examples': source.num_examples(split),
            **values, **numbers, **pictures}
  with open(prefix + '.json', 'w') as f:
    json.dump(result, f, indent=2)
  logging.info('Evaluation results written to %s.json', prefix)
  return result


def restore_state(store, step: int, config, num_classes: int, image_shape):
  """The TrainState of checkpoint `step`, for the model of `config`."""
  model = models.create_model(config, num_classes)
  target = train_state_lib.create_train_state(
      jax.random.key(0), model, tuple(image_shape), config, 1)
  return store.restore_state(step, target)


def summary(result: dict) -> dict:
  """The result without its per-example lists and layouts (for printing)."""
  return {k: v for k, v in result.items()
          if k not in ('examples', 'layout', 'confusion_matrix')}
