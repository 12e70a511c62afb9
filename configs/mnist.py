"""MNIST (TFDS 'mnist'), 28x28 grayscale digits, 10 epochs.

    python main.py --config=configs/mnist.py --workdir=runs/mnist

Result: not measured (docs/results.md#not-measured).

Digits are not mirror-symmetric, so no horizontal flip.
"""

from imgclf_jax.config import keys


def get_config():
  config = keys.get_config()
  config.dataset = 'mnist'
  config.image_size = 28
  config.augment = 'rotate,zoom,shift'
  config.rotation_degrees = 10.0
  config.num_epochs = 10
  return config
