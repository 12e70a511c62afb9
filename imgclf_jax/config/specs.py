"""The resolved ConfigDict as the small frozen specs each area takes: the
only place that reads the config for them. Each area's spec type lives in
the area (data/spec.py, ...) and never sees a ConfigDict; the ConfigDict
stays at the edges (flags, --help, checkpoint metadata, keys.KEY_ORIGINS).

Call these on a config that config/resolve.py has resolved (for_training,
for_inference) or checked (validate): they convert, they do not check.
"""

from imgclf_jax.data import augment
from imgclf_jax.data import spec as data_spec_lib


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


def data_spec(config) -> data_spec_lib.DataSpec:
  """The data keys of `config`: what the input pipeline and the sources
  take (data/spec.py)."""
  return data_spec_lib.DataSpec(
      source=data_spec_lib.SourceSpec(
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
      cache=data_spec_lib.CacheSpec(cache=config.cache,
                                    budget_gb=float(config.cache_budget_gb)),
      statistics=data_spec_lib.StatisticsSpec(
          normalization=config.normalization,
          mean=tuple(config.normalization_mean),
          std=tuple(config.normalization_std),
          sample_size=int(config.normalization_sample_size)),
      imbalance=data_spec_lib.ImbalanceSpec(
          class_weights=config.class_weights,
          oversample=bool(config.oversample),
          minority_augment=minority_augment_spec(config),
          minority_fraction=float(config.minority_fraction),
          warning_ratio=float(config.imbalance_warning_ratio)))
