"""ModelSpec: which network, and how it computes (config/specs.py builds it
from the config's Model keys)."""

import dataclasses

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What registry.create_model builds.

  name: a key of registry.MODELS; num_classes: the logits' width;
  dropout_rate: the CNN's (0 for the others); dtype: the computation dtype
  (jnp.float32, or jnp.bfloat16 for mixed precision; parameters stay
  float32); conv_impl: 'fast' (fast_conv.py's convolutions) or 'xla'
  (nn.Conv), already resolved for this backend (registry.conv_impl);
  layout: 'flax', or 'torch' (the ResNets with torchvision/timm's padding
  and stem, registry.TORCH_LAYOUT, for weights from those sources);
  freeze_batch_norm: BatchNorm in inference mode in training too (its
  running statistics used and kept; registry.FREEZABLE_BATCH_NORM).
  """
  name: str
  num_classes: int
  dropout_rate: float
  dtype: jnp.dtype
  conv_impl: str
  layout: str = 'flax'
  freeze_batch_norm: bool = False
