"""Fashion-MNIST (TFDS 'fashion_mnist'), 28x28 grayscale clothing, 15 epochs.

    python main.py --config=configs/fashion_mnist.py --workdir=runs/fmnist

Result: not measured (docs/results.md#not-measured).
"""

from imgclf_jax.config import keys


def get_config():
  config = keys.get_config()
  config.dataset = 'fashion_mnist'
  config.image_size = 28
  config.augment = 'flip,shift,zoom'
  config.num_epochs = 15
  return config
