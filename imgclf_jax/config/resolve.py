"""The one place where a config is checked and resolved, before any work.

`for_training` and `for_inference` turn the command line's ConfigDict (and a
checkpoint's saved one) into the resolved ConfigDict that specs.py reads into
each area's spec; `validate` raises a UserError naming the first invalid
value; `check_resume` one naming the keys a resumed run may not change.
"""

import math
import numbers

from absl import logging
import jax
import ml_collections

from imgclf_jax.config import keys
from imgclf_jax.config import specs
from imgclf_jax.config.keys import DATA
from imgclf_jax.config.keys import FLAGS
from imgclf_jax.config.keys import MODEL
from imgclf_jax.data import augment
from imgclf_jax.data import imbalance
from imgclf_jax.data import preprocess
from imgclf_jax.data import sources
from imgclf_jax.errors import UserError
from imgclf_jax.models import registry
from imgclf_jax.models import tta
from imgclf_jax.models.pretrained import source as pretrained_source

NORMALIZATIONS = ('standardize', 'unit')
CROPS = preprocess.CROPS
LR_SCHEDULES = ('constant', 'cosine', 'linear')
OPTIMIZERS = ('adam', 'adamw', 'sgd')
CONV_IMPLS = ('auto', 'fast', 'xla')
MODEL_LAYOUTS = ('flax', 'torch')
EARLY_STOPPING_METRICS = ('validation_loss', 'validation_accuracy')
# jax.random.key keeps 32 bits of a seed (2**32 would train as 0), and numpy's
# SeedSequence (the input pipeline's epoch seeds) refuses negative ones.
SEED_LIMIT = 2**32
# Bounds against typos (1e9 epochs) rather than limits of the program.
MAX_EPOCHS = 10_000
# The CNN's first dense layer has (image_size / 4)**2 * 64 * 128 weights:
# 5.4e8 at 1024 (2.1 GB; 8.6 GB with gradients and Adam's moments), and a
# batch of 128 such images needs 17 GB for the first convolution's output.
MAX_IMAGE_SIZE = 1024


def _require(ok: bool, key: str, value, must: str):
  if not ok:
    raise UserError(f'--config.{key}={value!r} is invalid: it must be {must}.')


def _whole(value) -> bool:
  """A finite number without a fractional part (20 or 20.0, not True)."""
  return (isinstance(value, numbers.Real) and not isinstance(value, bool) and
          math.isfinite(value) and int(value) == value)


def _validate_recipe(c):
  """The fine-tuning keys: in range, and only with init_from."""
  _require(isinstance(c.probe_epochs, numbers.Real) and
           not isinstance(c.probe_epochs, bool) and c.probe_epochs >= 0,
           'probe_epochs', c.probe_epochs,
           '>= 0 (epochs that train the classifier head alone; 0: none)')
  _require(isinstance(c.pretrained_lr_scale, numbers.Real) and
           not isinstance(c.pretrained_lr_scale, bool) and
           0 < c.pretrained_lr_scale <= 1, 'pretrained_lr_scale',
           c.pretrained_lr_scale, 'in (0, 1] (1: the learning rate of the '
           'head; for no updates at all use probe_epochs)')
  _require(isinstance(c.freeze_batch_norm, bool), 'freeze_batch_norm',
           c.freeze_batch_norm, 'True or False')
  if c.freeze_batch_norm:
    _require(c.model in registry.FREEZABLE_BATCH_NORM, 'freeze_batch_norm',
             c.freeze_batch_norm,
             f'False for --config.model={c.model} (only '
             f'{list(registry.FREEZABLE_BATCH_NORM)} have it)')
  for key, default in (('probe_epochs', 0.0), ('pretrained_lr_scale', 1.0),
                       ('freeze_batch_norm', False)):
    _require(c[key] == default or c.init_from, key, c[key],
             f'{default!r} without --config.init_from (it sets how '
             'pretrained weights are fine-tuned; give the weights)')


def validate(config: ml_collections.ConfigDict, num_devices: int,
             training: bool = True):
  """Raises UserError naming the first invalid config value.

  With `training=False` (evaluation, prediction: the config comes from a
  checkpoint) the training batch's fit to this machine's devices is not
  checked; eval_batch_size still must divide by `num_devices`.
  """
  c = config
  _require(isinstance(c.dataset, str) and c.dataset.strip() != '' and
           c.dataset.strip() != 'folder:', 'dataset', c.dataset,
           'a TFDS name (e.g. cifar10) or folder:/path/to/root')
  _require(c.learning_rate > 0, 'learning_rate', c.learning_rate, '> 0')
  _require(_whole(c.num_epochs) and 0 < c.num_epochs <= MAX_EPOCHS,
           'num_epochs', c.num_epochs, f'a whole number in [1, {MAX_EPOCHS}]')
  _require(isinstance(c.seed, numbers.Integral) and
           not isinstance(c.seed, bool) and 0 <= c.seed < SEED_LIMIT, 'seed',
           c.seed, f'a whole number in [0, {SEED_LIMIT - 1}]')
  _require(c.batch_size > 0, 'batch_size', c.batch_size, '> 0')
  _require(_whole(c.microbatches) and c.microbatches >= 0,
           'microbatches', c.microbatches, 'a whole number >= 0 (0: automatic)')
  _require(c.eval_batch_size > 0, 'eval_batch_size', c.eval_batch_size, '> 0')
  _require(_whole(c.image_size) and 8 <= c.image_size <= MAX_IMAGE_SIZE,
           'image_size', c.image_size,
           f'a whole number in [8, {MAX_IMAGE_SIZE}] (the model grows with '
           f'image_size**2: at {MAX_IMAGE_SIZE} its first dense layer alone '
           'holds 5.4e8 weights, 2.1 GB)')
  _require(0 <= c.dropout_rate < 1, 'dropout_rate', c.dropout_rate,
           'in [0, 1)')
  _require(0 < c.validation_fraction < 1, 'validation_fraction',
           c.validation_fraction, 'in (0, 1)')
  _require(c.weight_decay >= 0, 'weight_decay', c.weight_decay, '>= 0')
  _require(0 <= c.label_smoothing < 1, 'label_smoothing', c.label_smoothing,
           'in [0, 1)')
  _require(c.warmup_epochs >= 0, 'warmup_epochs', c.warmup_epochs, '>= 0')
  _require(c.checkpoint_every_epochs >= 1, 'checkpoint_every_epochs',
           c.checkpoint_every_epochs, '>= 1')
  _require(c.checkpoint_every_steps >= 0, 'checkpoint_every_steps',
           c.checkpoint_every_steps, '>= 0 (0: at epoch ends only)')
  _require(c.max_checkpoints_to_keep >= 1, 'max_checkpoints_to_keep',
           c.max_checkpoints_to_keep, '>= 1')
  _require(c.log_every_steps >= 1, 'log_every_steps', c.log_every_steps,
           '>= 1')
  _require(c.log_every_seconds >= 0, 'log_every_seconds',
           c.log_every_seconds, '>= 0 (0: by steps only)')
  _require(c.shuffle_buffer_size >= 1, 'shuffle_buffer_size',
           c.shuffle_buffer_size, '>= 1')
  _require(c.model in registry.MODELS, 'model', c.model,
           f'one of {sorted(registry.MODELS)}')
  _require(c.model_layout in MODEL_LAYOUTS, 'model_layout', c.model_layout,
           f'one of {MODEL_LAYOUTS}')
  if c.model_layout == 'torch':
    _require(c.model in registry.TORCH_LAYOUT, 'model_layout',
             c.model_layout, f"'flax' for --config.model={c.model} (only "
             f'{sorted(registry.TORCH_LAYOUT)} have the torch layout)')
  _require(isinstance(c.init_from, str), 'init_from', c.init_from,
           "a path ('' = none)")
  _require(c.normalization in NORMALIZATIONS, 'normalization',
           c.normalization, f'one of {NORMALIZATIONS}')
  _validate_data_scale(c)
  _require(c.lr_schedule in LR_SCHEDULES, 'lr_schedule', c.lr_schedule,
           f'one of {LR_SCHEDULES}')
  _require(c.optimizer in OPTIMIZERS, 'optimizer', c.optimizer,
           f'one of {OPTIMIZERS}')
  _require(0 <= c.momentum < 1, 'momentum', c.momentum, 'in [0, 1)')
  _require(isinstance(c.nesterov, bool), 'nesterov', c.nesterov,
           'True or False')
  for key in ('lr_start_fraction', 'lr_end_fraction'):
    _require(0 <= c[key] <= 1, key, c[key], 'in [0, 1]')
  _require(c.norm_bias_lr_scale > 0, 'norm_bias_lr_scale',
           c.norm_bias_lr_scale, '> 0')
  _require(0 <= c.ema_decay < 1, 'ema_decay', c.ema_decay,
           'in [0, 1) (0: no moving average)')
  _require(_whole(c.lookahead_every_steps) and c.lookahead_every_steps >= 0,
           'lookahead_every_steps', c.lookahead_every_steps,
           'a whole number >= 0 (0: no lookahead)')
  _require(c.lookahead_start_epochs >= 0, 'lookahead_start_epochs',
           c.lookahead_start_epochs, '>= 0')
  _require(0 <= c.lookahead_decay < 1, 'lookahead_decay', c.lookahead_decay,
           'in [0, 1)')
  _require(c.lookahead_decay_power >= 0, 'lookahead_decay_power',
           c.lookahead_decay_power, '>= 0')
  _require(c.whiten_bias_epochs >= 0, 'whiten_bias_epochs',
           c.whiten_bias_epochs, '>= 0')
  _validate_recipe(c)
  _require(_whole(c.early_stopping_patience) and
           c.early_stopping_patience >= 0, 'early_stopping_patience',
           c.early_stopping_patience, 'a whole number >= 0 (0: off)')
  _require(c.early_stopping_metric in EARLY_STOPPING_METRICS,
           'early_stopping_metric', c.early_stopping_metric,
           f'one of {EARLY_STOPPING_METRICS}')
  _require(c.conv_impl in CONV_IMPLS, 'conv_impl', c.conv_impl,
           f'one of {CONV_IMPLS}')
  _require(c.tta in tta.TTA_MODES, 'tta', c.tta, f'one of {tta.TTA_MODES}')
  minimum = registry.MIN_IMAGE_SIZE.get(c.model, 8)
  _require(c.image_size >= minimum, 'image_size', c.image_size,
           f'>= {minimum} for --config.model={c.model}')
  if c.model not in registry.DROPOUT_MODELS:
    _require(c.dropout_rate == 0, 'dropout_rate', c.dropout_rate,
             f'0 for --config.model={c.model} (it has no dropout)')
  _require(_whole(c.translate_pixels) and c.translate_pixels >= 0,
           'translate_pixels', c.translate_pixels, 'a whole number >= 0')
  # Raise on unknown augmentation names.
  specs.augment_spec(c)
  minority = specs.augment_spec(c, key='minority_augment')
  _require(c.rotation_degrees >= 0, 'rotation_degrees', c.rotation_degrees,
           '>= 0')
  _require(0 <= c.zoom_range < 1, 'zoom_range', c.zoom_range, 'in [0, 1)')
  _require(0 <= c.shift_fraction < 1, 'shift_fraction', c.shift_fraction,
           'in [0, 1)')
  _require(0 <= c.brightness_delta <= 1, 'brightness_delta',
           c.brightness_delta, 'in [0, 1]')
  _validate_imbalance(c, minority)
  _require(isinstance(c.half_precision, bool), 'half_precision',
           c.half_precision, 'True or False')
  _require(isinstance(c.data_on_device, bool), 'data_on_device',
           c.data_on_device, 'True or False')
  if c.data_on_device:
    for key, on in (('oversample', c.oversample),
                    ('minority_augment', minority)):
      if on:
        raise UserError(
            f'--config.{key}={c[key]!r} is a tf.data pipeline feature and '
            'does not combine with --config.data_on_device=True: turn one of '
            'them off.')
  _require(_whole(c.top_k) and c.top_k >= 1, 'top_k', c.top_k,
           'a whole number >= 1')
  _require(_whole(c.report_images) and c.report_images >= 1,
           'report_images', c.report_images, 'a whole number >= 1')
  for key in ('batch_size', 'eval_batch_size') if training else (
      'eval_batch_size',):
    if c[key] % num_devices:
      raise UserError(
          f'--config.{key}={c[key]} does not divide by the {num_devices} '
          f'local devices: use a multiple of {num_devices}, e.g. '
          f'--config.{key}={max(num_devices, c[key] // num_devices * num_devices)}.')
  per_device = c.batch_size // num_devices
  if training and c.microbatches and per_device % c.microbatches:
    raise UserError(
        f'--config.microbatches={c.microbatches} does not divide '
        f'the per-device batch ({c.batch_size} over {num_devices} devices = '
        f'{per_device}): use a divisor of {per_device}, or 0 (automatic).')


def _validate_data_scale(c):
  """The keys for datasets larger than memory (see keys.py)."""
  _require(c.cache is True or c.cache is False or (
      isinstance(c.cache, str) and c.cache == 'auto'), 'cache', c.cache,
           "True, False or 'auto' (cache when it fits cache_budget_gb)")
  _require(isinstance(c.cache_budget_gb, numbers.Real) and
           not isinstance(c.cache_budget_gb, bool) and
           math.isfinite(c.cache_budget_gb) and c.cache_budget_gb >= 0,
           'cache_budget_gb', c.cache_budget_gb,
           'a number of GB (1e9 bytes) >= 0')
  _require(_whole(c.normalization_sample_size) and
           c.normalization_sample_size >= 1, 'normalization_sample_size',
           c.normalization_sample_size, 'a whole number >= 1')
  _require(c.crop in CROPS, 'crop', c.crop, f'one of {CROPS}')
  if c.crop != 'none':
    for key, on in (('cache', c.cache is True),
                    ('oversample', c.oversample),
                    ('data_on_device', c.data_on_device)):
      if on:
        off = "'auto' or False" if key == 'cache' else 'False'
        raise UserError(
            f'--config.{key}={c[key]!r} does not combine with '
            f'--config.crop={c.crop!r}, which decodes a new crop of each '
            f'file every epoch: set --config.{key} to {off}, or use '
            '--config.crop=none.')
  mean, std = c.normalization_mean, c.normalization_std
  for key, values in (('normalization_mean', mean),
                      ('normalization_std', std)):
    _require(isinstance(values, (tuple, list)) and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and
        math.isfinite(v) for v in values), key, values,
        "a tuple of numbers, one per channel, e.g. '(0.5,0.5,0.5)' "
        '(() = measure them)')
  if bool(mean) != bool(std) or len(mean) != len(std):
    raise UserError(
        f'--config.normalization_mean={tuple(mean)!r} and '
        f'--config.normalization_std={tuple(std)!r}: give both, one number '
        'per channel each, or neither (() = measure them).')
  _require(all(v > 0 for v in std), 'normalization_std', tuple(std),
           'made of numbers > 0')
  if mean and c.normalization != 'standardize':
    raise UserError(
        f'--config.normalization_mean={tuple(mean)!r} is given with '
        f'--config.normalization={c.normalization!r}, which does not use it: '
        "set --config.normalization=standardize, or leave the statistics "
        'empty.')


def _validate_imbalance(c, minority: augment.AugmentSpec):
  """The class-imbalance keys (see keys.py)."""
  _require(c.imbalance_warning_ratio >= 1, 'imbalance_warning_ratio',
           c.imbalance_warning_ratio, '>= 1')
  imbalance.parse_class_weights(c.class_weights)  # raises on bad syntax
  _require(isinstance(c.oversample, bool), 'oversample', c.oversample,
           'True or False')
  _require(0 < c.minority_fraction <= 1, 'minority_fraction',
           c.minority_fraction, 'in (0, 1]')
  if not minority:
    return
  scale = c.minority_augment_scale
  _require(scale > 0, 'minority_augment_scale', scale, '> 0')
  for key, ok, must in (
      ('zoom_range', c.zoom_range * scale < 1, '< 1'),
      ('shift_fraction', c.shift_fraction * scale < 1, '< 1'),
      ('brightness_delta', c.brightness_delta * scale <= 1, '<= 1')):
    _require(ok, 'minority_augment_scale', scale,
             f'such that {key} * minority_augment_scale {must} (it is '
             f'{c[key] * scale:g})')


# ----------------------------------------------------------------------------
# Resolution


def for_training(config: ml_collections.ConfigDict,
                 num_devices: int) -> ml_collections.ConfigDict:
  """The checked, resolved config of a training run on `num_devices`:
  references resolved, a folder dataset's root absolute, `microbatches` 0
  (automatic) replaced by its value for this backend."""
  validate(config, num_devices)
  config = config.copy_and_resolve_references()
  config.dataset = sources.canonical_dataset(config.dataset)
  batch_norm = registry.has_batch_norm(config.model)
  if batch_norm and config.microbatches > 1:
    raise UserError(
        f'--config.microbatches={config.microbatches}: --config.model='
        f'{config.model} has BatchNorm, whose statistics are over the whole '
        'batch; use 0 (automatic) or 1.')
  config.microbatches = auto_microbatches(
      config.microbatches, config.batch_size // num_devices, batch_norm)
  if config.init_from:
    _resolve_init_from(config)
  return config


def check_resume(config, saved_config: dict, directory: str):
  """Raises UserError if `config` differs from the saved config of the
  checkpoints in `directory` in a key a resumed run must keep
  (keys.KEY_ORIGINS), or in using weight decay (Adam and AdamW keep
  different state)."""
  differences = keys.differences
  diffs = differences(saved_config, config,
                      keys.keys_where('resume', keys.FIXED))
  if (saved_config['weight_decay'] > 0) != (config.weight_decay > 0):
    # The optimizer's state differs with and without weight decay.
    diffs += differences(saved_config, config, ('weight_decay',))
  if diffs:
    diffs = ', '.join(diffs)
    raise UserError(
        f'the checkpoints in {directory} come from an incompatible config '
        f'({diffs}): use a new --workdir, or the config they were trained with.')


def _resolve_init_from(config):
  """Checks that init_from names weights --config.model can take (reading
  only their names or metadata), makes its path absolute, and sets
  model_layout to the weights' layout."""
  source = pretrained_source.describe(config.init_from)
  pretrained_source.check_model(source, config.model, config.init_from)
  if config.model_layout != source.model_layout:
    logging.info('model_layout %s: the layout of the weights in '
                 '--config.init_from=%s.', source.model_layout,
                 config.init_from)
  config.init_from = source.path
  config.model_layout = source.model_layout


def auto_microbatches(microbatches: int, per_device_batch: int,
                      batch_norm: bool = False) -> int:
  """An explicit value as it is; 0: 2 on CPU when it divides the
  per-device batch and the model has no BatchNorm, else 1 (GPU/TPU: 1)."""
  if microbatches:
    return int(microbatches)
  on_cpu = jax.default_backend() == 'cpu'
  return 2 if on_cpu and not batch_norm and per_device_batch % 2 == 0 else 1


def for_inference(saved_config: dict, config, mode: str, num_devices: int,
                  set_keys=None) -> ml_collections.ConfigDict:
  """The config of --mode=eval or --mode=predict (`mode`) for a checkpoint.

  The checkpoint's saved config, with the keys that `mode` takes from the
  command line (KEY_ORIGINS) taken from `config` when it is given. Without
  `config`, eval's batch is the checkpoint's eval_batch_size rounded down to a
  multiple of `num_devices` (a checkpoint from a machine with another device
  count evaluates here; the metrics do not depend on the batch).

  `set_keys`: the keys of `config` set on the command line (--config.KEY=),
  which decide where the DATA keys come from; None: all of them (a config
  built in code).
  """
  merged = ml_collections.ConfigDict(saved_config)
  for key, value in keys.get_config().items():
    if key not in merged:  # a checkpoint from before the key existed
      merged[key] = value
  if config is not None:
    ignored = keys.differences(saved_config, config,
                                      keys.keys_where(mode, MODEL))
    if ignored:
      logging.warning('--mode=%s uses the model of the checkpoint, not that '
                      'of --config (%s).', mode, ', '.join(ignored))
    taken = [*keys.keys_where(mode, FLAGS),
             *_data_keys(saved_config, config, mode, set_keys)]
    for key in taken:
      if key in merged and not _same_kind(merged[key], config[key]):
        del merged[key]  # e.g. cache True (bool) in the checkpoint, 'auto'
      merged[key] = config[key]
  elif mode == 'eval' and merged.eval_batch_size % num_devices:
    merged.eval_batch_size = max(
        num_devices, merged.eval_batch_size // num_devices * num_devices)
    logging.info('eval_batch_size %d (a multiple of the %d devices).',
                 merged.eval_batch_size, num_devices)
  merged.dataset = sources.canonical_dataset(merged.dataset)
  # Prediction pads its batches to the device count (device_axis.pad_batches):
  # no batch size has to divide it.
  validate(merged, num_devices if mode == 'eval' else 1, training=False)
  return merged


def _same_kind(a, b) -> bool:
  """Whether a ConfigDict field holding `a` can take `b` (ints and floats
  mix; other types must be the same)."""
  number = (int, float)
  if isinstance(a, number) and isinstance(b, number):
    return isinstance(a, bool) == isinstance(b, bool)
  return type(a) is type(b)


def _data_keys(saved_config: dict, config, mode: str, set_keys) -> list:
  """The DATA keys (KEY_ORIGINS) that `mode` takes from `config`: all of
  them where its dataset is the checkpoint's or was set on the command line,
  else only those set there (a config file for another dataset does not
  replace the checkpoint's)."""
  data_keys = keys.keys_where(mode, DATA)
  if not data_keys:
    return []
  same = (sources.canonical_dataset(config.dataset) ==
          sources.canonical_dataset(saved_config['dataset']))
  if set_keys is None or 'dataset' in set_keys or same:
    return list(data_keys)
  logging.warning(
      "--mode=%s evaluates on the checkpoint's dataset %s, not on --config's "
      '%s (set --config.dataset on the command line to evaluate on another '
      'dataset).', mode, saved_config['dataset'], config.dataset)
  return [k for k in data_keys if k in set_keys]
