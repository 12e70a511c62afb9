"""Model architectures, chosen by name with `config.model`.

Add an architecture by writing a linen Module that takes
(images [N, H, W, C], train: bool) and returns logits [N, num_classes], and
registering it in MODELS.
"""

import flax.linen as nn
import jax.numpy as jnp


def max_pool_2x2(x):
  """2x2 max pool, stride 2, 'VALID' (odd edges dropped), for NHWC input.

  Same values as nn.max_pool(x, (2, 2), (2, 2)); written as reshape + max
  because XLA:CPU's gradient of reduce_window (select_and_scatter) is slow:
  measured ~825 -> ~1,316 img/s for the whole train step on a 2-core CPU.
  """
  n, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2, :]
  return jnp.max(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


class CNN(nn.Module):
  """The seed CNN: Conv32-ReLU-MaxPool, Conv64-ReLU-MaxPool, Dense128-ReLU,
  Dropout, Dense num_classes (logits; the softmax is in the loss)."""
  num_classes: int
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, x, train: bool):
    x = max_pool_2x2(nn.relu(nn.Conv(32, (3, 3))(x)))
    x = max_pool_2x2(nn.relu(nn.Conv(64, (3, 3))(x)))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(128)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


MODELS = {'cnn': CNN}


def create_model(config, num_classes: int) -> nn.Module:
  return MODELS[config.model](num_classes=num_classes,
                              dropout_rate=config.dropout_rate)
