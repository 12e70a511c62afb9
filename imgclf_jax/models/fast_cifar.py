"""fast_cifar: the airbench94 network (Keller Jordan, arXiv 2404.00498).

    whitening conv 2x2 (frozen, from the training patches) - GELU
    3 conv groups, widths 64 / 256 / 256, each
        conv3x3 - maxpool 2 - BN - GELU - conv3x3 - BN - GELU
    global max pool - linear (no bias) - x 1/9

As published: BatchNorm without a learned scale (bias only), momentum 0.6
(Flax's convention: running = 0.6 running + 0.4 batch), epsilon 1e-12; the
3x3 convolutions without bias, initialised as PyTorch does
(U(+-1/sqrt(fan_in))) with their first `in_channels` filters set to the
identity (dirac), an implicit residual; the whitening kernel's filters are
the eigenvectors of the covariance of the training images' 2x2 patches,
scaled by 1/sqrt(eigenvalue + 5e-4), and their negatives
(`whitening_kernel`; setup.py sets them before the first step). Its bias is
trained for `config.whiten_bias_epochs` epochs, then frozen, like the kernel
(`frozen_paths`). The network has no dropout.

BatchNorm's batch statistics are averaged over the pmap axis in training
(`axis_name`), so one device and four compute the same update.
"""

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from imgclf_jax.parallel.device_axis import AXIS

WHITEN = 'Whiten'
# PyTorch's default init of Conv2d/Linear weights: U(-1/sqrt(fan_in), +...).
torch_default_init = nn.initializers.variance_scaling(1 / 3, 'fan_in',
                                                      'uniform')


def dirac_init(key, shape, dtype=jnp.float32):
  """torch_default_init, with filter i (i < in_channels) the identity."""
  kernel = torch_default_init(key, shape, dtype)
  kh, kw, cin, cout = shape
  n = min(cin, cout)
  identity = jnp.zeros((kh, kw, n, n), dtype).at[kh // 2, kw // 2].set(
      jnp.eye(n, dtype=dtype))
  return kernel.at[:, :, :n, :n].set(identity)


class ConvGroup(nn.Module):
  """conv - maxpool 2 - BN - GELU - conv - BN - GELU."""
  features: int
  bn_momentum: float
  dtype: jnp.dtype
  conv: Callable[..., nn.Module]
  pool: Callable[[jax.Array], jax.Array]
  bn_axis_name: str | None

  @nn.compact
  def __call__(self, x, train: bool):
    def norm(y, name):
      y = nn.BatchNorm(use_running_average=not train,
                       momentum=self.bn_momentum, epsilon=1e-12,
                       use_scale=False, dtype=jnp.float32,
                       use_fast_variance=False,
                       axis_name=self.bn_axis_name if train else None,
                       name=name)(y)
      return nn.gelu(y, approximate=False).astype(self.dtype)

    def conv(y, name):
      return self.conv(self.features, (3, 3), use_bias=False,
                       kernel_init=dirac_init, dtype=self.dtype, name=name)(y)

    x = conv(x, 'Conv_0')
    x = norm(self.pool(x), 'BatchNorm_0')
    return norm(conv(x, 'Conv_1'), 'BatchNorm_1')


class FastCifar(nn.Module):
  """The airbench94 network; (images, train) -> logits [N, num_classes]."""
  num_classes: int
  widths: tuple[int, ...] = (64, 256, 256)
  whiten_kernel_size: int = 2
  bn_momentum: float = 0.6
  logit_scale: float = 1 / 9
  dtype: jnp.dtype = jnp.float32
  conv: Callable[..., nn.Module] = nn.Conv
  pool: Callable[[jax.Array], jax.Array] = functools.partial(
      nn.max_pool, window_shape=(2, 2), strides=(2, 2))
  bn_axis_name: str | None = AXIS
  dropout_rate: float = 0.0    # no dropout: the config's rate must be 0

  @nn.compact
  def __call__(self, x, train: bool, example_ids=None):
    del example_ids  # no dropout
    k = self.whiten_kernel_size
    x = x.astype(self.dtype)
    x = nn.Conv(2 * x.shape[-1] * k * k, (k, k), padding='VALID',
                  use_bias=True, kernel_init=torch_default_init,
                  dtype=self.dtype, name=WHITEN)(x)
    x = nn.gelu(x, approximate=False)
    for i, width in enumerate(self.widths):
      x = ConvGroup(width, self.bn_momentum, self.dtype, self.conv,
                    self.pool, self.bn_axis_name, name=f'ConvGroup_{i}')(x, train)
    x = jnp.max(x, axis=(1, 2))  # 3x3 -> 1 at 32x32 inputs (MaxPool2d(3))
    x = nn.Dense(self.num_classes, use_bias=False,
                 kernel_init=torch_default_init, dtype=self.dtype)(x)
    return (x * self.logit_scale).astype(jnp.float32)

  @staticmethod
  def frozen_paths(whiten_bias_epochs: float) -> dict[str, float]:
    """Parameter path -> the epoch from which it is no longer trained."""
    return {f'{WHITEN}/kernel': 0.0, f'{WHITEN}/bias': whiten_bias_epochs}

  def init_from_data(self, params, images: np.ndarray):
    """`params` with the whitening kernel computed from `images` (normalised
    training images [N, H, W, C])."""
    kernel = params[WHITEN]['kernel']
    new = whitening_kernel(images, self.whiten_kernel_size)
    return {**params, WHITEN: {**params[WHITEN],
                               'kernel': jnp.asarray(new, kernel.dtype)}}


_WHITENING_CHUNK = 256  # images per step of whitening_kernel's sum


def whitening_kernel(images: np.ndarray, size: int, eps: float = 5e-4):
  """[size, size, C, 2 * C * size**2]: the eigenvectors of the covariance of
  the size x size patches of `images` [N, H, W, C], largest eigenvalue first,
  each divided by sqrt(eigenvalue + eps), then the same negated."""
  n, h, w, c = images.shape
  covariance = np.zeros((size * size * c,) * 2)
  # In chunks of images, so that the float64 patches of a whole split (or of
  # large images) are never held at once.
  for start in range(0, n, _WHITENING_CHUNK):
    chunk = np.asarray(images[start:start + _WHITENING_CHUNK], np.float64)
    patches = np.stack([chunk[:, i:h - size + 1 + i, j:w - size + 1 + j, :]
                        for i in range(size) for j in range(size)], axis=3)
    flat = patches.reshape(-1, size * size * c)  # (kh, kw, c) order
    covariance += flat.T @ flat
  covariance /= n * (h - size + 1) * (w - size + 1)
  eigenvalues, eigenvectors = np.linalg.eigh(covariance)
  order = np.argsort(eigenvalues)[::-1]
  scaled = eigenvectors[:, order] / np.sqrt(
      np.maximum(eigenvalues[order], 0.0) + eps)
  kernel = scaled.reshape(size, size, c, size * size * c)
  return np.concatenate([kernel, -kernel], axis=-1).astype(np.float32)
