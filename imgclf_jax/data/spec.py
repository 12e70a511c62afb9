"""What the data area is told: the data keys of a resolved config as small
frozen values (config/specs.data_spec makes them; nothing in data/ reads a
config). The meaning of each key is in config/keys.py."""

import dataclasses

from imgclf_jax.data import augment


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """Where the examples come from and how its splits resolve (sources.py)."""
  # config.dataset (a TFDS name, or 'folder:' and a root) and TFDS's data_dir.
  dataset: str
  data_dir: str | None
  # The logical splits: train_split, validation_split ('' = the dataset's own
  # validation split, else validation_fraction held out of train_split), and
  # the split --mode=eval evaluates (an image folder's layout looks for it).
  train_split: str
  validation_split: str
  validation_fraction: float
  eval_split: str


@dataclasses.dataclass(frozen=True)
class CacheSpec:
  """Whether resized examples are kept in memory (cache.py)."""
  # True, False or 'auto' (within budget_gb, 1 GB = 1e9 bytes).
  cache: bool | str
  budget_gb: float


@dataclasses.dataclass(frozen=True)
class StatisticsSpec:
  """The normalisation statistics (statistics.py)."""
  # 'standardize' (measured, or `mean`/`std` as given) or 'unit'.
  normalization: str
  # Given per-channel statistics in [0, 1] pixel units; () = measure them.
  mean: tuple[float, ...]
  std: tuple[float, ...]
  # A larger training split is measured on a fixed sample of this many.
  sample_size: int


@dataclasses.dataclass(frozen=True)
class ImbalanceSpec:
  """Class-imbalance remedies and their report (imbalance.py)."""
  # config.class_weights as given ('none', 'balanced', '1,1,4', 'cat=4').
  class_weights: str
  oversample: bool
  # The minority classes' augmentation, sizes already scaled (empty: off).
  minority_augment: augment.AugmentSpec
  # A minority class has fewer than this fraction of the largest's examples;
  # the imbalance warning is logged above warning_ratio.
  minority_fraction: float
  warning_ratio: float


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """Everything the input pipeline needs (input_pipeline.py)."""
  source: SourceSpec
  # Images are resized (or cropped, crop='random_resized') to image_size.
  image_size: int
  crop: str
  # The global training and evaluation batch sizes.
  batch_size: int
  eval_batch_size: int
  # Seeds the shuffle, the crops and the augmentation of every epoch.
  seed: int
  shuffle_buffer_size: int
  augment: augment.AugmentSpec
  cache: CacheSpec
  statistics: StatisticsSpec
  imbalance: ImbalanceSpec
