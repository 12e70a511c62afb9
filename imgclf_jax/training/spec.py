"""What a training run is given, one frozen spec per area (config/specs.py
builds them from a resolved config; nothing here reads the config):

  OptimSpec   how the weights are updated (train_state.py, steps.py)
  LoopSpec    the epoch loop: its length, logging, stopping, seed (loop.py)
  RunSpec     those two with the ModelSpec and CheckpointSpec, and the
              config as checkpoints record it (train.py)
"""

import dataclasses

from imgclf_jax.checkpoints.spec import CheckpointSpec
from imgclf_jax.models.spec import ModelSpec


@dataclasses.dataclass(frozen=True)
class OptimSpec:
  """The optimizer, its learning-rate schedule and what else changes the
  update (keys.py's Optimisation keys, and the model's training-time
  options). A new key about how parameters are updated (per-layer
  learning-rate multipliers, frozen layers) is a field here, read by
  train_state.create_optimizer or steps.train_step_for.

  optimizer: 'adam' (AdamW when weight_decay > 0), 'adamw' or 'sgd'
  (momentum, Nesterov's if nesterov).
  learning_rate, lr_schedule ('constant', 'cosine', 'linear'),
  warmup_epochs, lr_start_fraction, lr_end_fraction: the schedule over
  num_epochs (train_state.learning_rate_schedule).
  weight_decay: decoupled; norm_bias_lr_scale: the step scale of
  normalisation-layer biases; whiten_bias_epochs: the epochs fast_cifar's
  whitening bias trains (the model's frozen_paths).
  label_smoothing, ema_decay (0: no moving average), the lookahead
  (lookahead_every_steps 0: none; steps.lookahead_for) and microbatches
  (resolved: >= 1): the train step's (steps.train_step_for).
  probe_epochs: the epochs during which only the model's classifier head
  (registry.HEADS) is updated (a linear probe; 0: none);
  pretrained_lr_scale: the step scale of every other layer
  (train_state.create_optimizer).
  """
  optimizer: str
  learning_rate: float
  momentum: float
  nesterov: bool
  lr_schedule: str
  warmup_epochs: float
  lr_start_fraction: float
  lr_end_fraction: float
  num_epochs: int
  weight_decay: float
  norm_bias_lr_scale: float
  whiten_bias_epochs: float
  label_smoothing: float
  ema_decay: float
  lookahead_every_steps: int
  lookahead_start_epochs: float
  lookahead_decay: float
  lookahead_decay_power: float
  microbatches: int
  probe_epochs: float = 0.0
  pretrained_lr_scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class LoopSpec:
  """The epoch loop.

  num_epochs: epochs to train; batch_size: the global batch (images per
  step); seed: the parameters' initialisation, the dropout masks, the
  device-resident batches' order and init_from_data's sample;
  log_every_steps, log_every_seconds: the running metrics' periods (also
  after log_every_seconds since the last; 0: by steps only);
  early_stopping_metric and
  early_stopping_patience (0: never stops early); tta: the last
  validation's test-time augmentation ('none': none); data_on_device: the
  training split on the devices (device_data.py) instead of tf.data.
  """
  num_epochs: int
  batch_size: int
  seed: int
  log_every_steps: int
  log_every_seconds: float
  early_stopping_metric: str
  early_stopping_patience: int
  tta: str
  data_on_device: bool


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """A training run's specs, and `config_record`: its resolved config as
  plain JSON types (keys.to_dict), which each checkpoint's metadata and the
  TensorBoard hparams record."""
  model: ModelSpec
  optim: OptimSpec
  loop: LoopSpec
  checkpoints: CheckpointSpec
  config_record: dict
