"""MNIST (TFDS 'mnist'), 28x28 grayscale digits.

Digits are not mirror-symmetric, so no horizontal flip.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = 'mnist'
  config.image_size = 28
  config.augment = 'rotate,zoom,shift'
  config.rotation_degrees = 10.0
  config.num_epochs = 10
  return config
