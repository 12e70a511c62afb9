"""A run's set-up before its first step: the input pipeline, the TrainState
(restored from the checkpoint being resumed, or initialised: from training
images where the model asks), what the log and the workdir say about the
run, the TensorBoard writer, and the pmapped train step with its batches.

A new way to start the weights (from another checkpoint, say) belongs in
`initial_state`; a new kind of step in `trainer`.
"""

import dataclasses
from typing import Callable

from absl import logging
import jax
import numpy as np
import optax

from imgclf_jax.data import folder_source
from imgclf_jax.data import input_pipeline
from imgclf_jax.data.spec import DataSpec
from imgclf_jax.errors import UserError
from imgclf_jax.models import registry
from imgclf_jax.models.spec import ModelSpec
from imgclf_jax.parallel import device_axis
from imgclf_jax.parallel import distributed
from imgclf_jax.report import class_distribution
from imgclf_jax.training import device_data
from imgclf_jax.training import steps
from imgclf_jax.training import train_state as train_state_lib
from imgclf_jax.training.resume import Resumed
from imgclf_jax.training.spec import LoopSpec
from imgclf_jax.training.spec import OptimSpec


def check_validation_files(source):
  """Raises UserError naming the first validation image that does not decode,
  before training spends an epoch on the way to it (a new run's statistics
  pass decodes the train split). Image folders only: TFDS has no files."""
  files = source.files('validation')
  if files is not None and folder_source.find_unreadable(files):
    raise UserError(source.describe_error('validation', None))


def make_pipeline(source, data: DataSpec, resumed: Resumed | None
                  ) -> input_pipeline.InputPipeline:
  """The input pipeline of `data`; a resumed run normalises with its
  checkpoint's statistics, a new one measures or takes them."""
  normalization = None if resumed is None else resumed.metadata[
      'normalization']
  return input_pipeline.InputPipeline(source, data, normalization)


def initial_state(model_spec: ModelSpec, optim: OptimSpec, seed: int,
                  pipeline, store, resumed: Resumed | None,
                  pretrained=None):
  """(state, dropout key, init record): the TrainState training starts
  from, restored from `resumed`'s step of `store` (never re-importing its
  initial weights), or new from `seed`, then given pretrained weights
  (`pretrained(state) -> (state, init record)`, None for none) or, where
  the model has `init_from_data`, from training images. The init record says where pretrained initial weights
  came from (checkpoint metadata 'init_from'; None without them)."""
  model = registry.create_model(model_spec)
  init_rng, dropout_rng = jax.random.split(jax.random.key(seed))
  head = registry.HEADS.get(model_spec.name)
  if resumed is not None:  # restored into shapes: nothing initialised
    state = store.restore_state(resumed.step, train_state_lib.restore_target(
        model, pipeline.image_shape, optim, pipeline.steps_per_epoch, head))
    logging.info('Resumed from checkpoint step %d in %s', resumed.step,
                 store.directory)
    return state, dropout_rng, resumed.metadata.get('init_from')
  state = train_state_lib.create_train_state(
      init_rng, model, pipeline.image_shape, optim, pipeline.steps_per_epoch,
      head=head)
  init_record = None
  if pretrained is not None:
    state, init_record = pretrained(state)
  elif hasattr(model, 'init_from_data'):
    state = init_from_data(model, state, pipeline, seed)
  return state, dropout_rng, init_record


def init_from_data(model, state, pipeline, seed: int,
                   num_images: int = 5000):
  """`state` with the parameters that `model.init_from_data` computes from
  `num_images` normalised training images drawn at random with `seed`
  (fast_cifar's whitening layer; a folder's train split is in class order,
  so its first images would hold one or two classes). Only those are
  decoded, unless the split is cached (then the pass fills the cache)."""
  n = pipeline.source.num_examples('train')
  chosen = np.sort(np.random.default_rng(seed).choice(
      n, min(n, num_images), replace=False))
  images = np.concatenate([batch['image'] for batch in
                           pipeline.eval_batches('train', chosen)])
  logging.info('Initialising %s from %d training images.',
               type(model).__name__, len(images))
  return train_state_lib.with_params(
      state, model.init_from_data(state.params, images))


def describe(model_name: str, batch_size: int, pipeline, devices,
             workdir: str):
  """Logs what trains on what, writes class_distribution.png/.json (the
  first process) and logs the loss weights per class."""
  info = pipeline.source.info
  where = (f'{len(devices)} device(s)' if not distributed.several() else
           f'{jax.device_count()} devices, {len(devices)} in each of '
           f'{jax.process_count()} processes')
  logging.info('Dataset %s: %d classes, %s examples; model %s; %s, '
               '%d steps of %d per epoch.', info.name, info.num_classes,
               info.num_examples, model_name, where, pipeline.steps_per_epoch,
               batch_size)
  if distributed.is_primary():
    class_distribution.write_class_distribution(pipeline, workdir)
  weights = pipeline.loss_weights()
  if weights is not None:
    logging.info('Loss weights per class: %s', ', '.join(
        f'{n}={w:.3g}' for n, w in zip(info.class_names, weights)))


@dataclasses.dataclass(frozen=True)
class Trainer:
  """What the epoch loop steps with: the pmapped `train_step` (state, batch,
  rng) -> (state, metrics), given `dropout_rng`; `batches(epoch, first)`,
  an epoch's batches from its step `first` on; the `pipeline` (validation
  batches), `devices`, and the learning-rate `schedule` (for the record)."""
  train_step: Callable
  batches: Callable
  dropout_rng: jax.Array
  pipeline: input_pipeline.InputPipeline
  devices: list
  schedule: optax.Schedule


def trainer(optim: OptimSpec, loop: LoopSpec, pipeline, dropout_rng,
            devices) -> Trainer:
  """The train step of `optim` over `devices`, fed by tf.data or, with
  loop.data_on_device, by the training split held on the devices."""
  steps_per_epoch = pipeline.steps_per_epoch
  step_fn = steps.train_step_for(optim, steps_per_epoch)
  if loop.data_on_device:
    resident = device_data.DeviceData(pipeline, step_fn, loop.seed,
                                      loop.batch_size, devices)
    train_step, batches = resident.train_step, resident.train_batches
  else:
    train_step = device_axis.pmap_step(step_fn, in_axes=(None, 0, None),
                                       devices=devices)
    batches = pipeline.train_batches
  return Trainer(train_step, batches, dropout_rng, pipeline, devices,
                 train_state_lib.learning_rate_schedule(optim,
                                                        steps_per_epoch))


def checkpoint_metadata(config_record: dict, pipeline, split_sizes: dict,
                        init_record: dict | None = None) -> dict:
  """What every checkpoint of the run records besides its epoch and metrics
  (checkpoint_store.py): the config (`config_record`, keys.to_dict), the
  classes, the normalisation statistics, the image shape and the split
  sizes; and where pretrained initial weights came from (`init_record`)."""
  info = pipeline.source.info
  metadata = {'config': config_record,
              'class_names': list(info.class_names),
              'normalization': pipeline.normalization,
              'image_shape': list(pipeline.image_shape),
              'split_sizes': split_sizes,
              'dataset': info.name}
  if init_record is not None:
    metadata['init_from'] = init_record
  return metadata
