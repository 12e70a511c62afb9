"""Every key of the configuration, with its default and its meaning.

The defaults live in the package (`imgclf_jax/config_keys.py`, which
documents each key); this file is the starting point of the other configs in
this folder. Any key can be overridden on the command line:

    python main.py --config=configs/cifar10.py --config.num_epochs=5
"""

from imgclf_jax.config_keys import get_config  # pylint: disable=unused-import
