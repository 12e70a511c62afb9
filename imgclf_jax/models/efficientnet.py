"""EfficientNet-Lite (Tan and Le, 2019; the Lite variants of the TensorFlow
TPU repository: ReLU6, no squeeze-and-excitation, the stem and the head not
scaled) in Flax linen.

The network is that of the PyPI package efficientnet-lite-pytorch 0.1.0
(`EfficientNet.from_name('efficientnet-lite0')`), for which the ImageNet
weights in ../shared/pretrained/efficientnet_lite0.safetensors were made;
models/pretrained/name_maps.py puts them into this tree, and
tests/test_benchmarks.py checks our logits against that package's on the
same weights and images:

* stem: 3x3 stride-2 convolution (32 filters), BatchNorm, ReLU6;
* `stages` of MBConv blocks (the inverted bottleneck of MobileNetV2): a 1x1
  expansion convolution (omitted when expand_ratio is 1), BatchNorm, ReLU6;
  a depthwise k x k convolution (feature_group_count = its channels; the
  stage's stride in its first block), BatchNorm, ReLU6; a 1x1 projection,
  BatchNorm, no activation; the input added back where the block keeps
  stride 1 and width (TensorFlow's rule; the PyTorch package skips it in a
  stage's first block, which in the Lite widths never keeps the width);
* head: 1x1 convolution (1280 filters), BatchNorm, ReLU6, the global average
  pool, dropout (`dropout_rate`, where the registry gives `dropout`), a
  Dense layer `classifier` (logits).

Padding: every convolution pads as TensorFlow's 'SAME' (the total
max((out - 1) * stride + k - in, 0), the smaller half before), as the
package's Conv2dStaticSamePadding does for the image size it was built for
and its Conv2dDynamicSamePadding for any size; that is also what Flax's
'SAME' computes, so the convolutions use it. (PyTorch's symmetric padding,
which torchvision's ResNets use, differs: resnet.py's padding='torch'.)

Convolutions: nn.Conv, or (the registry's conv_impl 'fast', the default on
CPU) fast_conv.DepthwiseConv and PointwiseConv for the depthwise and 1x1
ones: the same parameters, values up to float rounding, a faster train
step on XLA:CPU
(BENCHMARKS.md#efficientnet_lite0-fine-tuning-step-intel-xeon-2-cores).

BatchNorm: epsilon 1e-3 and momentum 0.99, TensorFlow's (the package's
PyTorch momentum 0.01); statistics over the whole global batch in training
(averaged over `bn_axis_name`, as resnet.py); `dtype` is the computation
dtype (bfloat16 for config.half_precision) with float32 parameters,
BatchNorm in float32 and float32 logits, as resnet.py.

Not here: the package's drop-connect (stochastic depth), off in timm's
fine-tuning defaults.

Parameters of efficientnet_lite0 (1000 classes): 4,652,008, the package's
count (tests/models/test_efficientnet.py).
"""

import functools
from typing import Any, Callable, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from imgclf_jax.models.resnet import batch_norm
from imgclf_jax.parallel.device_axis import AXIS

# (repeats, kernel size, stride of the first block, expand ratio, output
# filters) per stage: efficientnet-lite0 (the package's
# 'r1_k3_s11_e1_i32_o16', ... 'r1_k3_s11_e6_i192_o320').
LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


class MBConv(nn.Module):
  """The inverted bottleneck block (see the module docstring)."""
  features: int
  kernel_size: int
  strides: int
  expand_ratio: int
  pointwise_conv: Callable[..., nn.Module]  # nn.Conv's signature
  depthwise_conv: Callable[..., nn.Module]
  norm: Callable[..., Any]
  act: Callable[[jax.Array], jax.Array]

  @nn.compact
  def __call__(self, x):
    inputs = x
    width = x.shape[-1] * self.expand_ratio
    if self.expand_ratio != 1:
      x = self.pointwise_conv(width, (1, 1), name='expand_conv')(x)
      x = self.act(self.norm(name='expand_bn')(x))
    k, s = self.kernel_size, self.strides
    x = self.depthwise_conv(width, (k, k), (s, s), feature_group_count=width,
                            name='depthwise_conv')(x)
    x = self.act(self.norm(name='depthwise_bn')(x))
    x = self.pointwise_conv(self.features, (1, 1), name='project_conv')(x)
    x = self.norm(name='project_bn')(x)
    if s == 1 and inputs.shape[-1] == self.features:
      x = x + inputs
    return x


class EfficientNetLite(nn.Module):
  """EfficientNet-Lite; see the module docstring. Blocks are numbered
  through the stages (blocks_0, blocks_1, ...), as the package's
  `_blocks.N`."""
  num_classes: int
  stages: Sequence[Tuple[int, int, int, int, int]] = LITE0_STAGES
  stem_filters: int = 32
  head_filters: int = 1280
  dropout_rate: float = 0.0
  # The dropout layer before the classifier (registry.ExampleDropout),
  # called as dropout(rate)(x, example_ids, deterministic); None: none.
  dropout: Callable[..., nn.Module] | None = None
  dtype: Any = jnp.float32
  bn_momentum: float = 0.99
  bn_epsilon: float = 1e-3
  bn_axis_name: str | None = AXIS
  # BatchNorm with its running statistics in training too, never updating
  # them (config.freeze_batch_norm, for fine-tuning).
  freeze_batch_norm: bool = False
  # The modules of the depthwise and the 1x1 convolutions (nn.Conv's
  # signature; the registry's conv_impl 'fast' gives fast_conv's
  # DepthwiseConv and PointwiseConv); None: nn.Conv.
  depthwise_conv: Callable[..., nn.Module] | None = None
  pointwise_conv: Callable[..., nn.Module] | None = None

  @nn.compact
  def __call__(self, x, train: bool, example_ids=None):
    if self.dropout_rate and self.dropout is None:
      raise ValueError('dropout_rate > 0 needs a dropout layer (dropout=)')
    conv = functools.partial(nn.Conv, padding='SAME', use_bias=False,
                             dtype=self.dtype)
    depthwise_conv, pointwise_conv = (
        conv if m is None else functools.partial(
            m, padding='SAME', use_bias=False, dtype=self.dtype)
        for m in (self.depthwise_conv, self.pointwise_conv))
    norm = functools.partial(
        batch_norm, self.dtype,
        use_running_average=not train or self.freeze_batch_norm,
        momentum=self.bn_momentum,
        epsilon=self.bn_epsilon,
        dtype=jnp.float32,
        axis_name=(self.bn_axis_name if train and not self.freeze_batch_norm
                   else None))
    act = jax.nn.relu6
    x = x.astype(self.dtype)
    x = conv(self.stem_filters, (3, 3), (2, 2), name='stem_conv')(x)
    x = act(norm(name='stem_bn')(x))
    n = 0
    for repeats, kernel, stride, expand, features in self.stages:
      for j in range(repeats):
        x = MBConv(features, kernel, stride if j == 0 else 1, expand,
                   pointwise_conv=pointwise_conv,
                   depthwise_conv=depthwise_conv, norm=norm, act=act,
                   name=f'blocks_{n}')(x)
        n += 1
    x = pointwise_conv(self.head_filters, (1, 1), name='head_conv')(x)
    x = act(norm(name='head_bn')(x))
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    if self.dropout is not None:
      x = self.dropout(self.dropout_rate, name='Dropout_0')(
          x, example_ids, deterministic=not train)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='classifier')(x)
    return x.astype(jnp.float32)


EfficientNetLite0 = functools.partial(EfficientNetLite, stages=LITE0_STAGES)
