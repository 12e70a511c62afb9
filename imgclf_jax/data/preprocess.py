"""The per-image preprocessing shared by training, evaluation and prediction.

    file bytes --decode_image--> uint8 [H, W, C]
      --resize_image--> uint8 [S, S, C]
      --to_unit_float--> float32 in [0, 1]   (augmentation happens here, train)
      --normalize--> float32, (x - mean) / std per channel

With config.crop='random_resized' the first two steps are one of
`random_resized_crop` (training) or `central_crop` (evaluation, prediction):
file bytes -> a window of the image, decoded (only the window, for a JPEG)
and resized to [S, S, C]. `eval_image` is evaluation's path for either.

The input pipeline and the sources build their tf.data graphs from these
functions and `predict.py` applies the same ones to single files, so a
checkpoint sees new images exactly as it saw its training images;
`normalize` is also the device-resident data's and the exported model's.
"""

import re

import numpy as np
import tensorflow as tf


def decode_image(data, channels: int):
  """Encoded JPEG/PNG/BMP/GIF bytes -> uint8 [H, W, channels].

  Grayscale, RGB and RGBA files all come out with `channels` channels (alpha is
  dropped; grayscale is repeated). An animated GIF gives its first frame.
  """
  return tf.io.decode_image(data, channels=channels, expand_animations=False)


def resize_image(image, size: int, channels: int):
  """uint8 [H, W, C] -> uint8 [size, size, C] (antialiased, rounded).

  Images that already have the size pass through untouched.
  """
  image = tf.ensure_shape(image, [None, None, channels])
  same = tf.reduce_all(tf.shape(image)[:2] == size)
  image = tf.cond(
      same, lambda: image,
      lambda: tf.cast(tf.round(tf.clip_by_value(tf.image.resize(
          image, [size, size], antialias=True), 0, 255)), tf.uint8))
  return tf.ensure_shape(image, [size, size, channels])


# The random-resized crop of the Flax ImageNet example
# (examples/imagenet/input_pipeline.py, _decode_and_random_crop): a window of
# 8% to 100% of the image's area with an aspect ratio in [3/4, 4/3], from
# tf.image's sample_distorted_bounding_box with 10 tries; when they find no
# such window (it returns the whole image), the central crop instead.
CROP_AREA_RANGE = (0.08, 1.0)
CROP_ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
CROP_MAX_ATTEMPTS = 10
CROP_MIN_OBJECT_COVERED = 0.1
# Evaluation's central square: this fraction of the shorter side (the
# example's image_size / (image_size + 32): 224 of 256).
CENTRAL_CROP_FRACTION = 0.875
CROPS = ('none', 'random_resized')


def central_window(height, width):
  """[y, x, h, w] of the central square of side CENTRAL_CROP_FRACTION x the
  shorter side (at least 1 pixel), as int32."""
  side = tf.maximum(tf.cast(CENTRAL_CROP_FRACTION * tf.cast(
      tf.minimum(height, width), tf.float32), tf.int32), 1)
  return tf.stack([(height - side + 1) // 2, (width - side + 1) // 2, side,
                   side])


def random_resized_window(height, width, seed):
  """[y, x, h, w] of a random-resized crop of an image of height x width,
  a pure function of the stateless `seed` (int [2]) and the size."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.stack([height, width, 1]),
      bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
      seed=seed, min_object_covered=CROP_MIN_OBJECT_COVERED,
      aspect_ratio_range=CROP_ASPECT_RATIO_RANGE,
      area_range=CROP_AREA_RANGE, max_attempts=CROP_MAX_ATTEMPTS,
      use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], size[0], size[1]])
  whole = tf.logical_and(size[0] == height, size[1] == width)
  return tf.cond(whole, lambda: central_window(height, width),
                 lambda: window)


def decode_window(data, channels: int, window_of):
  """The window `window_of(height, width)` ([y, x, h, w]) of an encoded
  image, as uint8 [h, w, channels]: a JPEG decodes only that window
  (tf.io.decode_and_crop_jpeg, which needs the file's size alone:
  extract_jpeg_shape); other formats decode whole, then crop.

  The JPEG path gives the same pixels as decoding whole and cropping, except
  in a chroma-subsampled JPEG (most are) the window's first and last columns
  where they are not the image's: libjpeg upsamples the colour at the
  window's left and right edges as at an image's edge.
  """
  def jpeg():
    shape = tf.io.extract_jpeg_shape(data)
    window = window_of(shape[0], shape[1])
    return tf.io.decode_and_crop_jpeg(data, window, channels=channels)

  def other():
    image = decode_image(data, channels)
    shape = tf.shape(image)
    y, x, h, w = tf.unstack(window_of(shape[0], shape[1]))
    return image[y:y + h, x:x + w]

  image = tf.cond(tf.io.is_jpeg(data), jpeg, other)
  return tf.ensure_shape(image, [None, None, channels])


def random_resized_crop(data, seed, size: int, channels: int):
  """Encoded image bytes -> uint8 [size, size, channels]: training's
  random-resized crop (fixed by `seed`), resized as resize_image does."""
  image = decode_window(data, channels,
                        lambda h, w: random_resized_window(h, w, seed))
  return resize_image(image, size, channels)


def central_crop(data, size: int, channels: int):
  """Encoded image bytes -> uint8 [size, size, channels]: evaluation's
  central crop, resized as resize_image does."""
  return resize_image(decode_window(data, channels, central_window), size,
                      channels)


def eval_image(data, size: int, channels: int, crop: str):
  """Encoded image bytes -> uint8 [size, size, channels] as evaluation sees
  them under config.crop `crop` (prediction uses the same)."""
  if crop == 'none':
    return resize_image(decode_image(data, channels), size, channels)
  return central_crop(data, size, channels)


def to_unit_float(images):
  """uint8 pixels -> float32 in [0, 1]."""
  return tf.cast(images, tf.float32) / 255.0


def normalize(images, normalization: dict):
  """[0, 1] float pixels -> model input, with the training split's statistics.

  `normalization` is {'mean': [C floats], 'std': [C floats]} as stored in the
  checkpoint metadata. `images` may be a TF tensor (tf.data, predict), a JAX
  array (device_data.py's step, export.py's served function) or numpy: the
  statistics are float32 constants of whichever it is.
  """
  mean = np.asarray(normalization['mean'], np.float32)
  std = np.asarray(normalization['std'], np.float32)
  return (images - mean) / std


def decode_error_reason(error) -> str:
  """A TF decoding error's own words, without TF's op decorations."""
  text = (getattr(error, 'message', '') or type(error).__name__).splitlines()[0]
  text = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', text)
  return re.sub(r'\s*\[Op:\w+\].*$', '', text).strip()
