"""The per-image preprocessing shared by training, evaluation and prediction.

    file bytes --decode_image--> uint8 [H, W, C]
      --resize_image--> uint8 [S, S, C]
      --to_unit_float--> float32 in [0, 1]   (augmentation happens here, train)
      --normalize--> float32, (x - mean) / std per channel

`input_pipeline.py` and `datasets.py` build their tf.data graphs from these
functions and `predict.py` applies the same ones to single files, so a
checkpoint sees new images exactly as it saw its training images.
"""

import re

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


def to_unit_float(images):
  """uint8 pixels -> float32 in [0, 1]."""
  return tf.cast(images, tf.float32) / 255.0


def normalize(images, normalization: dict):
  """[0, 1] float pixels -> model input, with the training split's statistics.

  `normalization` is {'mean': [C floats], 'std': [C floats]} as stored in the
  checkpoint metadata.
  """
  mean = tf.constant(normalization['mean'], tf.float32)
  std = tf.constant(normalization['std'], tf.float32)
  return (images - mean) / std


def decode_error_reason(error) -> str:
  """A TF decoding error's own words, without TF's op decorations."""
  text = (getattr(error, 'message', '') or type(error).__name__).splitlines()[0]
  text = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', text)
  return re.sub(r'\s*\[Op:\w+\].*$', '', text).strip()
