"""Fashion-MNIST (TFDS 'fashion_mnist'), 28x28 grayscale clothing items."""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = 'fashion_mnist'
  config.image_size = 28
  config.augment = 'flip,shift,zoom'
  config.num_epochs = 15
  return config
