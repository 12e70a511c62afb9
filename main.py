"""imgclf_jax command line: train, evaluate a checkpoint, or predict images.

    python main.py --config=configs/cifar10.py --workdir=runs/cifar10
    python main.py --workdir=runs/cifar10 --mode=eval --step=best
    python main.py --workdir=runs/cifar10 --mode=predict --images='photos/*.jpg'

The same command as `imgclf-jax` (pip install .): imgclf_jax/command_line.py
defines its flags; `python main.py --help` lists them and the config keys.
"""

# pylint: disable=unused-import
from imgclf_jax.command_line import define_flags
from imgclf_jax.command_line import FLAGS
from imgclf_jax.command_line import main
from imgclf_jax.command_line import parse_flags
from imgclf_jax.command_line import run
from imgclf_jax.malloc_tuning import tune_malloc

if __name__ == '__main__':
  run()
