"""CIFAR-10: the seed CNN with the default augmentation, 20 epochs.

    python main.py --config=configs/cifar10.py --workdir=runs/cifar10_jpeg \
      --config.dataset=folder:../shared/datasets/cifar10-jpeg

Measured: 69.9% validation accuracy (loss 0.880) after 20 epochs (best
epoch 17: 70.4%), wall time 14 min 0 s, on a 2-core Intel Xeon VM (CPU, one
JAX device, shared with other jobs). Data: the CIFAR-10 training images as
JPEG (quality 75), 45,000 for training and 5,000 (10% per class) held out for
validation. Measured at commit 87d66a2. Command, data and curves:
docs/results.md.

With TFDS's 'cifar10', which is downloaded on first use (not measured: the
measuring machines are offline):

    python main.py --config=configs/cifar10.py --workdir=runs/cifar10
"""

from imgclf_jax.config import keys


def get_config():
  config = keys.get_config()
  config.dataset = 'cifar10'
  config.image_size = 32
  config.num_epochs = 20
  return config
