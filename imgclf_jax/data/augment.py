"""The augmentations' arithmetic, written once for TF and for JAX.

tf.data's augmentation (`augment_batch`, below) and the device-resident data mode
(`device_data.py`, augmenting inside the jitted step) both run `augment`
below. Its functions take `ops`, from `tf_ops()` or `jax_ops()`: the array
functions they need under one set of names. The warp matches
tf.raw_ops.ImageProjectiveTransformV3 with BILINEAR interpolation and
REFLECT fill (tested against it), written as gathers so that XLA compiles it.
"""

import dataclasses
import functools
import math
import types

from imgclf_jax.errors import UserError

AUGMENTATIONS = ('flip', 'rotate', 'zoom', 'shift', 'translate', 'brightness')
WARPS = ('flip', 'rotate', 'zoom', 'shift', 'translate')


def parse_augment(spec: str, key: str = 'augment') -> tuple[str, ...]:
  """'flip, shift' -> ('flip', 'shift'); '' -> (); raises UserError on
  unknown names and on an empty one ('flip,,rotate', 'flip,')."""
  if not (spec or '').strip():
    return ()
  names = tuple(n.strip() for n in spec.split(','))
  if '' in names:
    raise UserError(
        f'--config.{key}={spec!r}: an empty augmentation name (two commas, '
        'or one at an end): separate the names by single commas, e.g. '
        f"'flip,rotate'; '' for none.")
  unknown = [n for n in names if n not in AUGMENTATIONS]
  if unknown:
    raise UserError(
        f'--config.{key}={spec!r}: unknown augmentation(s) {unknown}; '
        f'choose a comma-separated subset of {",".join(AUGMENTATIONS)}.')
  return names


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
  """Which augmentations a batch gets, and how large they are.

  names: a subset of AUGMENTATIONS; rotation_degrees: rotation uniform in
  [-d, d]; zoom_range: scale uniform in [1 - z, 1 + z]; shift_fraction:
  translation up to this fraction of a side; brightness_delta: added to
  [0, 1] pixels, uniform in [-d, d]; translate_pixels: a whole-pixel
  translation, uniform in [-p, p] on each axis.
  """
  names: tuple[str, ...] = ()
  rotation_degrees: float = 0.0
  zoom_range: float = 0.0
  shift_fraction: float = 0.0
  brightness_delta: float = 0.0
  translate_pixels: int = 0

  def scaled(self, factor: float) -> 'AugmentSpec':
    """The same augmentations with every size times `factor`."""
    return dataclasses.replace(
        self, rotation_degrees=self.rotation_degrees * factor,
        zoom_range=self.zoom_range * factor,
        shift_fraction=self.shift_fraction * factor,
        brightness_delta=self.brightness_delta * factor,
        translate_pixels=int(round(self.translate_pixels * factor)))

  def __bool__(self) -> bool:
    return bool(self.names)


def num_streams(spec: AugmentSpec) -> int:
  """The random streams `augment` draws from (the sixth only for
  translate, so that the other augmentations' draws do not depend on it)."""
  return 6 if 'translate' in spec.names else 5


@functools.cache
def tf_ops():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return types.SimpleNamespace(
      float32=lambda x: tf.cast(x, tf.float32),
      int32=lambda x: tf.cast(x, tf.int32),
      shape=tf.shape, reshape=tf.reshape, stack=tf.stack,
      floor=tf.floor, where=tf.where, clip=tf.clip_by_value,
      minimum=tf.minimum, cos=tf.cos, sin=tf.sin,
      range=lambda n, dtype: tf.range(tf.cast(n, dtype)),
      zeros=lambda shape, dtype: tf.zeros(shape, dtype),
      ones=lambda shape, dtype: tf.ones(shape, dtype),
      meshgrid=tf.meshgrid, take=tf.gather,
      ensure_shape=tf.ensure_shape)


@functools.cache
def jax_ops():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  return types.SimpleNamespace(
      float32=lambda x: jnp.asarray(x, jnp.float32),
      int32=lambda x: jnp.asarray(x).astype(jnp.int32),
      shape=jnp.shape, reshape=jnp.reshape, stack=jnp.stack,
      floor=jnp.floor, where=jnp.where, clip=jnp.clip,
      minimum=jnp.minimum, cos=jnp.cos, sin=jnp.sin,
      range=lambda n, dtype: jnp.arange(n, dtype=dtype),
      zeros=lambda shape, dtype: jnp.zeros(shape, dtype),
      ones=lambda shape, dtype: jnp.ones(shape, dtype),
      meshgrid=jnp.meshgrid, take=lambda a, i: jnp.take(a, i, axis=0),
      ensure_shape=lambda x, shape: x)


def reflect(ops, coord, size):
  """Input coordinate -> inside [0, size - 1], as TF's REFLECT fill mode:
  mirrored about -0.5 and size - 0.5 (d c b a | a b c d | d c b a), then
  clamped. `size` is a float32 scalar."""
  period = 2.0 * size
  below = period * ops.floor(-coord / period) + coord  # in (-period, 0]
  below = ops.where(below < -size, below + period, -below - 1.0)
  above = coord - period * ops.floor(coord / period)   # in [0, period)
  above = ops.where(above >= size, period - above - 1.0, above)
  coord = ops.where(coord < 0.0, below,
                    ops.where(coord > size - 1.0, above, coord))
  return ops.clip(coord, 0.0, size - 1.0)


def warp_bilinear(ops, images, transforms):
  """Affine warp of a batch, bilinear, edges reflected.

  Args:
    ops: tf_ops() or jax_ops().
    images: float32 [N, H, W, C].
    transforms: float32 [N, 6] (a0, a1, a2, b0, b1, b2): output pixel (x, y)
      reads the input at (a0 x + a1 y + a2, b0 x + b1 y + b2), the convention
      of tf.raw_ops.ImageProjectiveTransformV3 (whose results this matches).
  """
  images = ops.float32(images)
  shape = ops.shape(images)
  n, height, width, channels = shape[0], shape[1], shape[2], shape[3]
  h, w = ops.float32(height), ops.float32(width)
  ys, xs = ops.meshgrid(ops.range(height, 'float32'),
                        ops.range(width, 'float32'), indexing='ij')
  t = transforms[:, :, None, None]
  in_x = reflect(ops, t[:, 0] * xs + t[:, 1] * ys + t[:, 2], w)
  in_y = reflect(ops, t[:, 3] * xs + t[:, 4] * ys + t[:, 5], h)
  x0, y0 = ops.floor(in_x), ops.floor(in_y)
  x0i, y0i = ops.int32(x0), ops.int32(y0)
  # At the last row/column the far neighbour has weight 0: clamp its index.
  x1i, y1i = ops.minimum(x0i + 1, width - 1), ops.minimum(y0i + 1, height - 1)
  pixels = ops.reshape(images, [-1, channels])
  first = ops.range(n, 'int32')[:, None, None] * (height * width)

  def at(yi, xi):
    return ops.take(pixels, first + yi * width + xi)

  wx1, wy1 = (in_x - x0)[..., None], (in_y - y0)[..., None]
  wx0, wy0 = (x0 + 1.0 - in_x)[..., None], (y0 + 1.0 - in_y)[..., None]
  out = (wy0 * (wx0 * at(y0i, x0i) + wx1 * at(y0i, x1i)) +
         wy1 * (wx0 * at(y1i, x0i) + wx1 * at(y1i, x1i)))
  return ops.ensure_shape(out, images.shape)


def affine_matrices(ops, angles, scales, shifts, flips, height, width):
  """The [N, 6] warp_bilinear transforms of a flip, then a rotation by
  `angles` (radians), a zoom by `scales` and a translation by `shifts`.

  A content point p moves to  c + scale * R(angle) (F p - c) + shift,  with c
  the image centre, F the horizontal mirror where `flips` is true, shift =
  (dx, dy) in pixels (+x right, +y down), and R the rotation matrix in pixel
  coordinates (y down), so a positive angle turns the content clockwise on
  screen. Per-image parameters: [N], [N], [N, 2], [N] bool.
  """
  height, width = ops.float32(height), ops.float32(width)
  cx, cy = (width - 1) / 2, (height - 1) / 2
  # warp_bilinear maps each output pixel back to its input point, so invert:
  # p_in = F (R(-angle) (p_out - c - shift) / scale + c).
  cos = ops.cos(angles) / scales
  sin = ops.sin(angles) / scales
  ox, oy = cx + shifts[:, 0], cy + shifts[:, 1]
  a0, a1 = cos, sin
  b0, b1 = -sin, cos
  a2 = cx - a0 * ox - a1 * oy
  b2 = cy - b0 * ox - b1 * oy
  # The mirror F: x -> (width - 1) - x, applied to the input x coordinate.
  sign = ops.where(flips, -1.0, 1.0)
  a0, a1 = sign * a0, sign * a1
  a2 = ops.where(flips, (width - 1) - a2, a2)
  return ops.stack([a0, a1, a2, b0, b1, b2], axis=1)


def augment(ops, images, uniform, spec: AugmentSpec):
  """The augmentations of `spec` applied to a batch.

  Args:
    ops: tf_ops() or jax_ops().
    images: float32 [N, H, W, C] in [0, 1].
    uniform: uniform(stream, shape, low, high) -> float32 draws; streams 0-5
      (flip, rotate, zoom, shift, brightness, translate) must be
      independent.
    spec: which augmentations, and their sizes.
  """
  names = spec.names
  shape = ops.shape(images)
  n = shape[0]

  def symmetric(stream, draw_shape, bound):
    return uniform(stream, draw_shape, -bound, bound)

  if set(WARPS) & set(names):
    flips = (uniform(0, [n], 0.0, 1.0) < 0.5 if 'flip' in names
             else ops.zeros([n], 'bool'))
    angles = (symmetric(1, [n], math.radians(spec.rotation_degrees))
              if 'rotate' in names else ops.zeros([n], 'float32'))
    scales = (1.0 + symmetric(2, [n], spec.zoom_range)
              if 'zoom' in names else ops.ones([n], 'float32'))
    size = ops.float32(ops.stack([shape[2], shape[1]]))  # (width, height)
    shifts = (symmetric(3, [n, 2], spec.shift_fraction) * size
              if 'shift' in names else ops.zeros([n, 2], 'float32'))
    if 'translate' in names:  # whole pixels: the warp reads exact pixels
      p = spec.translate_pixels
      shifts = shifts + ops.clip(ops.floor(
          uniform(5, [n, 2], 0.0, 1.0) * (2 * p + 1)) - p, -p, p)
    images = warp_bilinear(ops, images, affine_matrices(
        ops, angles, scales, shifts, flips, shape[1], shape[2]))
  if 'brightness' in names:
    delta = symmetric(4, [n, 1, 1, 1], spec.brightness_delta)
    images = ops.clip(images + delta, 0.0, 1.0)
  return images


def augment_batch(images, seed, spec: AugmentSpec, rows=None):
  """Applies the augmentations of `spec` to a batch.

  Plain TF ops, all of which XLA compiles: the input pipeline runs this inside
  its jit-compiled batch transform.

  Args:
    images: float32 [N, H, W, C] in [0, 1].
    seed: int32/int64 tensor of shape [2], the stateless seed of this batch.
    spec: which augmentations, and their sizes.
    rows: None, or (offset, total): `images` are rows offset..offset + N of
      a batch of `total` (one process's share of a global batch), and get
      the augmentation those rows get in the whole batch.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  images = tf.convert_to_tensor(images, tf.float32)
  if not spec:
    return images
  seeds = tf.random.experimental.stateless_split(seed, num=num_streams(spec))

  def uniform(stream, shape, low, high):
    if rows is None:
      return tf.random.stateless_uniform(shape, seeds[stream], low, high)
    offset, total = rows
    whole = tf.random.stateless_uniform([total, *shape[1:]], seeds[stream],
                                        low, high)
    return whole[offset:offset + shape[0]]

  return augment(tf_ops(), images, uniform, spec)
