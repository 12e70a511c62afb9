"""The one place that reads a resolved config into the specs each area
takes: data (data/spec.py), model (models/spec.py), optimisation and
training loop (training/spec.py), checkpoints (checkpoints/spec.py) and
report (report/spec.py). --mode=train builds them after
resolve.for_training, eval, predict and export after resolve.for_inference
(resolve.validate checks the augmentation names with augment_spec); below
this module no code reads the config. A new key is read here into its
area's spec. These convert; they do not check (resolve.py does)."""

import jax.numpy as jnp

from imgclf_jax.checkpoints.spec import CheckpointSpec
from imgclf_jax.config import keys
from imgclf_jax.data import augment
from imgclf_jax.data.spec import CacheSpec
from imgclf_jax.data.spec import DataSpec
from imgclf_jax.data.spec import ImbalanceSpec
from imgclf_jax.data.spec import SourceSpec
from imgclf_jax.data.spec import StatisticsSpec
from imgclf_jax.models import registry
from imgclf_jax.models.spec import ModelSpec
from imgclf_jax.report.spec import ReportSpec
from imgclf_jax.training.spec import LoopSpec
from imgclf_jax.training.spec import OptimSpec
from imgclf_jax.training.spec import RunSpec


def augment_spec(config, key: str = 'augment') -> augment.AugmentSpec:
  """config[key] ('augment' or 'minority_augment') with the config's
  augmentation sizes (unscaled); raises UserError on unknown names."""
  return augment.AugmentSpec(
      augment.parse_augment(config[key], key=key),
      float(config.rotation_degrees), float(config.zoom_range),
      float(config.shift_fraction), float(config.brightness_delta),
      int(config.translate_pixels))


def minority_augment_spec(config) -> augment.AugmentSpec:
  """The augmentation minority examples get: config.minority_augment's names,
  the augmentation sizes times config.minority_augment_scale."""
  return augment_spec(config, 'minority_augment').scaled(
      config.minority_augment_scale)


def data_spec(config) -> DataSpec:
  """The data keys of `config`: what the input pipeline and the sources
  take."""
  return DataSpec(
      source=SourceSpec(
          dataset=config.dataset.strip(), data_dir=config.data_dir,
          train_split=config.train_split,
          validation_split=config.validation_split,
          validation_fraction=float(config.validation_fraction),
          eval_split=config.eval_split),
      image_size=int(config.image_size), crop=config.crop,
      batch_size=int(config.batch_size),
      eval_batch_size=int(config.eval_batch_size), seed=int(config.seed),
      shuffle_buffer_size=int(config.shuffle_buffer_size),
      augment=augment_spec(config),
      cache=CacheSpec(cache=config.cache,
                      budget_gb=float(config.cache_budget_gb)),
      statistics=StatisticsSpec(
          normalization=config.normalization,
          mean=tuple(config.normalization_mean),
          std=tuple(config.normalization_std),
          sample_size=int(config.normalization_sample_size)),
      imbalance=ImbalanceSpec(
          class_weights=config.class_weights,
          oversample=bool(config.oversample),
          minority_augment=minority_augment_spec(config),
          minority_fraction=float(config.minority_fraction),
          warning_ratio=float(config.imbalance_warning_ratio)))


def model_spec(config, num_classes: int) -> ModelSpec:
  """The model of `config` with `num_classes` outputs; conv_impl 'auto'
  resolved for this backend."""
  return ModelSpec(
      name=config.model, num_classes=int(num_classes),
      dropout_rate=float(config.dropout_rate),
      dtype=jnp.bfloat16 if config.half_precision else jnp.float32,
      conv_impl=registry.conv_impl(config.model, config.conv_impl),
      layout=config.get('model_layout', 'flax'),
      freeze_batch_norm=bool(config.freeze_batch_norm))


def optim_spec(config) -> OptimSpec:
  return OptimSpec(
      optimizer=config.optimizer,
      learning_rate=float(config.learning_rate),
      momentum=float(config.momentum),
      nesterov=bool(config.nesterov),
      lr_schedule=config.lr_schedule,
      warmup_epochs=float(config.warmup_epochs),
      lr_start_fraction=float(config.lr_start_fraction),
      lr_end_fraction=float(config.lr_end_fraction),
      num_epochs=int(config.num_epochs),
      weight_decay=float(config.weight_decay),
      norm_bias_lr_scale=float(config.norm_bias_lr_scale),
      whiten_bias_epochs=float(config.whiten_bias_epochs),
      label_smoothing=float(config.label_smoothing),
      ema_decay=float(config.ema_decay),
      lookahead_every_steps=int(config.lookahead_every_steps),
      lookahead_start_epochs=float(config.lookahead_start_epochs),
      lookahead_decay=float(config.lookahead_decay),
      lookahead_decay_power=float(config.lookahead_decay_power),
      microbatches=int(config.microbatches),
      probe_epochs=float(config.probe_epochs),
      pretrained_lr_scale=float(config.pretrained_lr_scale))


def loop_spec(config) -> LoopSpec:
  return LoopSpec(
      num_epochs=int(config.num_epochs),
      batch_size=config.batch_size,
      seed=config.seed,
      log_every_steps=config.log_every_steps,
      log_every_seconds=float(config.log_every_seconds),
      early_stopping_metric=config.early_stopping_metric,
      early_stopping_patience=int(config.early_stopping_patience),
      tta=config.tta,
      data_on_device=config.data_on_device)


def checkpoint_spec(config) -> CheckpointSpec:
  return CheckpointSpec(max_to_keep=config.max_checkpoints_to_keep,
                        every_epochs=config.checkpoint_every_epochs,
                        every_steps=int(config.checkpoint_every_steps))


def report_spec(config) -> ReportSpec:
  return ReportSpec(top_k=config.top_k, tta=config.tta,
                    report_images=config.report_images)


def run_spec(config, num_classes: int) -> RunSpec:
  """Every spec of a training run on a dataset of `num_classes` classes,
  with the config as its checkpoints record it."""
  return RunSpec(model=model_spec(config, num_classes),
                 optim=optim_spec(config), loop=loop_spec(config),
                 checkpoints=checkpoint_spec(config),
                 config_record=keys.to_dict(config))
