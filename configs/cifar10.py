"""CIFAR-10: the seed CNN with the default augmentation, 20 epochs.

    python main.py --config=configs/cifar10.py --workdir=runs/cifar10_jpeg \
      --config.dataset=folder:../shared/datasets/cifar10-jpeg

trains on the CIFAR-10 training images as JPEG (an image folder), 10% of
each class held out for validation. Result, with its data, machine and
commit: docs/results.md#the-seed-cnn-on-cifar-10.

With TFDS's 'cifar10', which is downloaded on first use (not measured):

    python main.py --config=configs/cifar10.py --workdir=runs/cifar10
"""

from imgclf_jax.config import keys


def get_config():
  config = keys.get_config()
  config.dataset = 'cifar10'
  config.image_size = 32
  config.num_epochs = 20
  return config
