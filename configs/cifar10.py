"""CIFAR-10 (TFDS 'cifar10'): the seed CNN with the default augmentation.

    python main.py --config=configs/cifar10.py --workdir=runs/cifar10

Offline, train on the CIFAR-10 JPEG image folder instead:

    python main.py --config=configs/cifar10.py --workdir=runs/cifar10_jpeg \
      --config.dataset=folder:../shared/datasets/cifar10-jpeg
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = 'cifar10'
  config.image_size = 32
  config.num_epochs = 20
  return config
