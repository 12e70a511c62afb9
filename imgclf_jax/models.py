"""Model architectures, chosen by name with `config.model`.

Add an architecture by writing a linen Module that takes
(images [N, H, W, C], train: bool) and returns logits [N, num_classes], and
registering it in MODELS.
"""

import flax.linen as nn

from imgclf_jax.fast_conv import FastConv
from imgclf_jax.fast_conv import max_pool_2x2


class CNN(nn.Module):
  """The seed CNN: Conv32-ReLU-MaxPool, Conv64-ReLU-MaxPool, Dense128-ReLU,
  Dropout, Dense num_classes (logits; the softmax is in the loss).

  The convolutions and pools compute what nn.Conv and nn.max_pool compute,
  with gradients that run faster on XLA:CPU (see fast_conv.py); the parameter
  tree is nn.Conv's ('Conv_0', 'Conv_1', ...).
  """
  num_classes: int
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, x, train: bool):
    x = max_pool_2x2(nn.relu(FastConv(32, (3, 3), name='Conv_0')(x)))
    x = max_pool_2x2(nn.relu(FastConv(64, (3, 3), name='Conv_1')(x)))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(128)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


class PlainCNN(nn.Module):
  """The seed CNN written with nn.Conv and nn.max_pool: the same function and
  parameters as CNN, with the gradients XLA emits by default (slower on CPU;
  kept as the reference for tests and benchmarks)."""
  num_classes: int
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.max_pool(nn.relu(nn.Conv(32, (3, 3))(x)), (2, 2), strides=(2, 2))
    x = nn.max_pool(nn.relu(nn.Conv(64, (3, 3))(x)), (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(128)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


MODELS = {'cnn': CNN, 'cnn_plain': PlainCNN}


def create_model(config, num_classes: int) -> nn.Module:
  return MODELS[config.model](num_classes=num_classes,
                              dropout_rate=config.dropout_rate)
