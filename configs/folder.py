"""Your own images: a folder laid out root/<class_name>/<image file>, or
root/<split>/<class_name>/<image file> (docs/data.md#image-folders).

    python main.py --config=configs/folder.py --workdir=runs/photos \
      --config.dataset=folder:/path/to/root

Result: not measured; it depends on your images (docs/results.md#not-measured).

JPEG, PNG, BMP or GIF, any size, grayscale/RGB/RGBA (decoded to RGB). Without
a root/validation (or root/val, root/valid) folder, `validation_fraction` of
every class (of root/train, or of root) is held out for validation.
"""

from imgclf_jax.config import keys


def get_config():
  config = keys.get_config()
  config.dataset = 'folder:'  # set the root: --config.dataset=folder:/path
  config.image_size = 64
  config.batch_size = 64
  config.eval_batch_size = 128
  config.num_epochs = 30
  return config
