"""Model architectures, chosen by name with `config.model`.

Add an architecture by writing a linen Module that takes
(images [N, H, W, C], train: bool, example_ids=None) and returns logits
[N, num_classes], and registering it in MODELS. `example_ids` (int [N]) are
the examples' positions in the global batch; ExampleDropout uses them so that
the training step draws the same masks however the batch is split over
devices and slices.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from imgclf_jax.fast_conv import FastConv
from imgclf_jax.fast_conv import max_pool_2x2


class ExampleDropout(nn.Module):
  """nn.Dropout whose mask for each example depends only on the 'dropout'
  rng and that example's id, not on which device or batch slice holds it.

  Same semantics as nn.Dropout otherwise: kept values are scaled by
  1 / (1 - rate); identity when `deterministic`.
  """
  rate: float

  @nn.compact
  def __call__(self, x, example_ids, deterministic: bool):
    if deterministic or self.rate == 0.0:
      return x
    if example_ids is None:
      example_ids = jnp.arange(x.shape[0])
    key = self.make_rng('dropout')
    keep_prob = 1.0 - self.rate
    keep = jax.vmap(lambda i: jax.random.bernoulli(
        jax.random.fold_in(key, i), keep_prob, x.shape[1:]))(example_ids)
    return jnp.where(keep, x / keep_prob, jnp.zeros((), x.dtype))


class CNN(nn.Module):
  """The seed CNN: Conv32-ReLU-MaxPool, Conv64-ReLU-MaxPool, Dense128-ReLU,
  Dropout, Dense num_classes (logits; the softmax is in the loss).

  The convolutions and pools compute what nn.Conv and nn.max_pool compute,
  with gradients that run faster on XLA:CPU (see fast_conv.py); the parameter
  tree is nn.Conv's ('Conv_0', 'Conv_1', ...).

  `dtype` is the computation dtype (bfloat16 for config.half_precision):
  parameters stay float32 and are cast where they are used, and the logits
  come back as float32 for the loss.
  """
  num_classes: int
  dropout_rate: float = 0.5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool, example_ids=None):
    x = x.astype(self.dtype)
    x = max_pool_2x2(nn.relu(FastConv(32, (3, 3), name='Conv_0')(x)))
    x = max_pool_2x2(nn.relu(FastConv(64, (3, 3), name='Conv_1')(x)))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(128, dtype=self.dtype)(x))
    x = ExampleDropout(self.dropout_rate, name='Dropout_0')(
        x, example_ids, deterministic=not train)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class PlainCNN(nn.Module):
  """The seed CNN written with nn.Conv and nn.max_pool: the same function and
  parameters as CNN, with the gradients XLA emits by default (slower on CPU;
  kept as the reference for tests and benchmarks)."""
  num_classes: int
  dropout_rate: float = 0.5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool, example_ids=None):
    conv = lambda features: nn.Conv(features, (3, 3), dtype=self.dtype)
    x = x.astype(self.dtype)
    x = nn.max_pool(nn.relu(conv(32)(x)), (2, 2), strides=(2, 2))
    x = nn.max_pool(nn.relu(conv(64)(x)), (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(128, dtype=self.dtype)(x))
    x = ExampleDropout(self.dropout_rate, name='Dropout_0')(
        x, example_ids, deterministic=not train)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


MODELS = {'cnn': CNN, 'cnn_plain': PlainCNN}


def compute_dtype(config) -> jnp.dtype:
  """bfloat16 with config.half_precision, else float32."""
  return jnp.bfloat16 if config.half_precision else jnp.float32


def create_model(config, num_classes: int) -> nn.Module:
  return MODELS[config.model](num_classes=num_classes,
                              dropout_rate=config.dropout_rate,
                              dtype=compute_dtype(config))
