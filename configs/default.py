"""The base of the other configs: every key at its default.

    python main.py --config=configs/default.py --workdir=runs/default

Result: the same config as configs/cifar10.py (TFDS 'cifar10', 20 epochs):
docs/results.md#the-seed-cnn-on-cifar-10.

The defaults live in the package, in imgclf_jax/config/keys.py, which
documents each key. The other files in this folder start from them too
(importing the package, not this folder, so that they load wherever the
command runs from; `--help` lists the keys). Any key can be overridden on
the command line:

    python main.py --config=configs/cifar10.py --config.num_epochs=5
"""

from imgclf_jax.config.keys import get_config  # pylint: disable=unused-import
