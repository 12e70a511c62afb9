"""A 3x3 'SAME' convolution and a 2x2 max pool whose gradients XLA:CPU runs fast.

`FastConv` computes exactly what `nn.Conv(features, kernel_size,
padding='SAME')` computes (stride 1, NHWC, same parameters and initialisers);
`max_pool_2x2` is `nn.max_pool(x, (2, 2), strides=(2, 2))`. Only the way the
work is expressed differs, because on XLA:CPU (jaxlib 0.10.2, which hands
convolutions and dots to YNNPACK) the forms jax.grad emits are slow:

* The filter gradient of a convolution is emitted as a convolution with a
  whole-image window and a 3x3 output, which runs at a fraction of the
  machine's GEMM rate and was about half of the train step. Here it is an
  im2col GEMM: the patch matrix is the nine shifted slices of the padded
  input concatenated along channels (benchmarks/conv_forms.py compares this
  with a pad-and-sum fusion inside the train step), then multiplied as a
  split-K batched dot (within noise of dy^T @ P in conv_forms.py on the AMD
  EPYC), or for the first layer as dy^T @ P (see _dw).
* The first layer's forward pass (3 input channels) is also an im2col GEMM;
  XLA reuses the patch matrix in the backward pass.
* The input gradient stays a forward convolution with the flipped kernel, as
  jax.grad emits it (already fast).
* `DepthwiseConv` is nn.Conv with feature_group_count equal to its channels
  (EfficientNet's depthwise k x k convolutions, any stride, TensorFlow's and
  Flax's 'SAME' padding) as the sum of its k*k taps: shifted (strided)
  slices of the padded input times one weight per channel, one fusion, and
  jax.grad's gradients of that: XLA:CPU runs the grouped convolution's
  forward and backward passes far slower (each form's time per layer:
  benchmarks/efficientnet_speed.py's pieces, or its jax column with
  lax.conv_general_dilated).
* `max_pool_2x2` stores the int8 index of the first maximum of each window
  (the tie rule of nn.max_pool's select_and_scatter and of PyTorch); its
  gradient is one compare-and-select fusion, instead of select_and_scatter
  (slow on XLA:CPU) or reduce_max's gradient (an extra pass for ties).

tests/test_fast_conv.py checks values and gradients against nn.Conv and
nn.max_pool; BENCHMARKS.md has the measured effect on the train step.
"""
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax
import flax.linen as nn

__all__ = ['FastConv', 'DepthwiseConv', 'PointwiseConv', 'max_pool_2x2', 'conv2d_same',
           'depthwise_conv_same']

_DN = ('NHWC', 'HWIO', 'NHWC')


def _same_pads(k):
  """lax 'SAME' padding for stride 1: (low, high) = ((k-1)//2, k//2)."""
  return (k - 1) // 2, k // 2


def _pad_same(x, kh, kw):
  return jnp.pad(x, ((0, 0), _same_pads(kh), _same_pads(kw), (0, 0)))


def _im2col(x, kh, kw):
  """Patch matrix P of shape (N*H*W, kh*kw*C), columns ordered (kh, kw, c) -- i.e. the
  row-major flattening of an HWIO kernel's first three dims: the kh*kw shifted slices
  of the padded input, concatenated along channels."""
  n, h, w, c = x.shape
  xp = _pad_same(x, kh, kw)
  taps = [xp[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)]
  return jnp.concatenate(taps, axis=3).reshape(n * h * w, kh * kw * c)


def _mm(a, b):
  """Standard-form (M,K)@(K,N) dot: the layout XLA:CPU hands to YNNPACK."""
  return lax.dot_general(a, b, (((1,), (0,)), ((), ())))


def _small_cin(kh, kw, cin):
  # First-layer-like shapes (e.g. RGB input): YNNPACK's direct conv is slow for tiny Cin.
  return kh * kw * cin <= 32


def _gemm_fwd(x, w):
  """The 'SAME' convolution as one GEMM of the im2col patch matrix."""
  kh, kw, cin, cout = w.shape
  n, h, ww, _ = x.shape
  return _mm(_im2col(x, kh, kw), w.reshape(kh * kw * cin, cout)).reshape(n, h, ww, cout)


def _fwd(x, w):
  if _small_cin(*w.shape[:3]):
    return _gemm_fwd(x, w)
  return lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=_DN)


def _flipped(w):
  """The kernel whose forward convolution of dy is the input gradient:
  spatially flipped, in/out channels swapped."""
  return jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)


def _dx(w, dy):
  """Input gradient = forward conv of dy with the spatially flipped, in/out-swapped kernel.
  (the same HLO jax.grad produces; XLA:CPU runs it well)."""
  kh, kw = w.shape[:2]
  (lh, hh), (lw, hw) = _same_pads(kh), _same_pads(kw)
  return lax.conv_general_dilated(dy, _flipped(w), (1, 1), ((hh, lh), (hw, lw)), dimension_numbers=_DN)


def _dw(x, w, dy):
  kh, kw, cin, cout = w.shape
  p = _im2col(x, kh, kw)                      # (K, kh*kw*cin), K = N*H*W
  d = dy.reshape(-1, cout)                    # (K, cout)
  k = p.shape[0]
  if _small_cin(kh, kw, cin) or k % 2:
    # dW^T = dy^T @ P. XLA folds both transposes into the dot, so this runs
    # as a dot contracting dim 0 of both operands (XLA's own kernel, not
    # YNNPACK). For the first layer it is within noise of a split-K dot over
    # 8 blocks and well ahead of jax.grad's filter-gradient convolution
    # (benchmarks/conv_forms.py, BENCHMARKS.md). Also the form for an odd K.
    r = _mm(d.T, p).T
  else:
    # split-K batched dot, summed (faster than dy^T @ P and nine per-tap
    # dots on the 2-core Xeon, level with dy^T @ P on the AMD EPYC:
    # benchmarks/conv_forms.py).
    r = lax.dot_general(p.reshape(2, k // 2, -1), d.reshape(2, k // 2, cout),
              (((1,), (1,)), ((0,), (0,)))).sum(0)
  return r.reshape(kh, kw, cin, cout)


@jax.custom_vjp
def conv2d_same(x, w):
  """NHWC x HWIO -> NHWC, stride 1, 'SAME' padding, no bias (numerically == lax conv)."""
  return _fwd(x, w)


def _conv_fwd(x, w):
  return _fwd(x, w), (x, w)


def _conv_bwd(res, dy):
  x, w = res
  # Note: for the first layer dx is never used by the optimizer and XLA removes it (DCE).
  return _dx(w, dy).astype(x.dtype), _dw(x, w, dy).astype(w.dtype)


conv2d_same.defvjp(_conv_fwd, _conv_bwd)


class _ConvLike(nn.Module):
  """nn.Conv's signature and parameters (kernel, optional bias; its
  initialisers; the input and kernel cast to `dtype`) around the
  computation of a subclass: `_kernel_shape(x)`, `_compute(x, kernel)`, and
  `_refusal(x)`, a text for what it does not compute (None: it does)."""
  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  feature_group_count: int = 1
  use_bias: bool = True
  padding: str = 'SAME'
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
  param_dtype: jnp.dtype = jnp.float32
  dtype: jnp.dtype | None = None  # computation dtype (None: that of x)

  @nn.compact
  def __call__(self, x):
    refusal = self._refusal(x)
    if refusal:
      raise ValueError(f'{type(self).__name__}: {refusal}')
    kernel = self.param('kernel', self.kernel_init, self._kernel_shape(x),
                        self.param_dtype)
    x = x.astype(self.dtype or x.dtype)
    y = self._compute(x, kernel.astype(x.dtype))
    if self.use_bias:
      bias = self.param('bias', self.bias_init, (self.features,),
                        self.param_dtype)
      y = y + bias.astype(y.dtype)
    return y

  def _plain_refusal(self):
    """What a stride-1, 'SAME', ungrouped convolution refuses."""
    if (tuple(self.strides) != (1, 1) or self.padding != 'SAME' or
        self.feature_group_count != 1):
      return (f'stride 1, padding SAME, no groups; got stride '
              f'{tuple(self.strides)}, padding {self.padding!r}, '
              f'feature_group_count {self.feature_group_count}.')
    return None


class FastConv(_ConvLike):
  """Drop-in for nn.Conv(features, kernel_size, padding='SAME') with stride 1 (NHWC).

  Same parameters as nn.Conv; give it name='Conv_<i>' to keep nn.Conv's parameter tree."""

  def _refusal(self, x):
    return self._plain_refusal()

  def _kernel_shape(self, x):
    return (*tuple(self.kernel_size), x.shape[-1], self.features)

  def _compute(self, x, kernel):
    return conv2d_same(x, kernel)


# ----------------------------------------------------------------------------- 1x1
class PointwiseConv(_ConvLike):
  """Drop-in for nn.Conv(features, (1, 1), padding='SAME') with stride 1
  (NHWC): the same parameters (kernel (1, 1, in, features)) and values, as
  one dot over the channels, whose gradients are dots too (XLA:CPU runs a
  1x1 convolution's forward and backward passes slower than the dots)."""
  kernel_size: Sequence[int] = (1, 1)

  def _refusal(self, x):
    if tuple(self.kernel_size) != (1, 1):
      return f'a 1x1 kernel; got {tuple(self.kernel_size)}.'
    return self._plain_refusal()

  def _kernel_shape(self, x):
    return (1, 1, x.shape[-1], self.features)

  def _compute(self, x, kernel):
    return lax.dot_general(x, kernel[0, 0], (((x.ndim - 1,), (0,)), ((), ())))


# ----------------------------------------------------------------------------- depthwise
def _same_total_pad(size, k, stride):
  """lax 'SAME' padding of one spatial axis: (low, high), the smaller half
  before (TensorFlow's rule)."""
  out = -(-size // stride)
  total = max((out - 1) * stride + k - size, 0)
  return total // 2, total - total // 2


def depthwise_conv_same(x, w, strides=(1, 1)):
  """NHWC x (kh, kw, 1, C) -> NHWC: the depthwise convolution
  lax.conv_general_dilated(x, w, strides, 'SAME', feature_group_count=C)
  computes, as the sum of its kh*kw taps."""
  kh, kw = w.shape[:2]
  sh, sw = strides
  n, h, ww, c = x.shape
  ph, pw = _same_total_pad(h, kh, sh), _same_total_pad(ww, kw, sw)
  oh, ow = -(-h // sh), -(-ww // sw)
  xp = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
  y = None
  for i in range(kh):
    for j in range(kw):
      tap = xp[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw, :]
      term = tap * w[i, j, 0]
      y = term if y is None else y + term
  return y


class DepthwiseConv(_ConvLike):
  """Drop-in for nn.Conv(features, kernel_size, strides, padding='SAME',
  feature_group_count=features) on inputs of `features` channels (NHWC): the
  same parameters (kernel (kh, kw, 1, features), nn.Conv's initialisers)
  and the same values, computed by depthwise_conv_same. Give it nn.Conv's
  name to keep its parameter tree."""

  def _refusal(self, x):
    if (self.padding != 'SAME' or x.shape[-1] != self.features or
        self.feature_group_count != self.features):
      return (f'padding SAME and {self.features} groups of one channel; got '
              f'padding {self.padding!r}, feature_group_count '
              f'{self.feature_group_count}, {x.shape[-1]} input channels.')
    return None

  def _kernel_shape(self, x):
    return (*tuple(self.kernel_size), 1, self.features)

  def _compute(self, x, kernel):
    return depthwise_conv_same(x, kernel, tuple(self.strides))


# ----------------------------------------------------------------------------- 2x2 max pool
@jax.custom_vjp
def max_pool_2x2(x):
  """== nn.max_pool(x, (2, 2), strides=(2, 2)) (VALID: odd trailing row/col dropped), NHWC.
  Gradient goes to the first maximum of each window in (0,0),(0,1),(1,0),(1,1) order, as with
  nn.max_pool's select_and_scatter and torch."""
  return _pool_fwd(x)[0]


def _pool_fwd(x):
  n, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  a, b, cc, d = x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 1::2, 1::2]
  y = jnp.maximum(jnp.maximum(a, b), jnp.maximum(cc, d))
  idx = jnp.where(a == y, 0, jnp.where(b == y, 1, jnp.where(cc == y, 2, 3))).astype(jnp.int8)
  return y, (idx, x.shape[0], h, w, c)


def _pool_bwd(res, g):
  idx, n, h, w, c = res
  k = jnp.arange(4, dtype=jnp.int8).reshape(1, 1, 2, 1, 2, 1)
  dx = jnp.where(idx[:, :, None, :, None, :] == k, g[:, :, None, :, None, :], jnp.zeros((), g.dtype))
  dx = dx.reshape(n, h // 2 * 2, w // 2 * 2, c)
  if h % 2 or w % 2:
    dx = jnp.pad(dx, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
  return (dx,)


max_pool_2x2.defvjp(_pool_fwd, _pool_bwd)
