"""Fine-tune ImageNet weights on your own images (a folder laid out
root/<class_name>/<image file>, or root/<split>/<class_name>/<image file>;
docs/data.md#image-folders):

    python main.py --config=configs/finetune_folder.py --workdir=runs/mine \
      --config.dataset=folder:/path/to/photos

It starts efficientnet_lite0 from the ImageNet weights in
../shared/pretrained/efficientnet_lite0.safetensors (another copy:
--config.init_from=/path/to/efficientnet_lite0.safetensors) with a new
classifier head for your classes, and fine-tunes them as Keras's and timm's
guides do:

* image_size 224: the resolution the weights were trained at. Their
  filters and (frozen) BatchNorm statistics are those of objects at that
  scale; smaller inputs (e.g. --config.image_size=160, about half the
  computation) work, with an accuracy not measured here.
* the input normalised as the weights were trained, not with your images'
  statistics: pixels scaled to [-1, 1] (mean 0.498, std 0.502 per channel,
  measured for this file by benchmarks/pretrained_check.py).
* probe_epochs 2: the new head alone first (a linear probe), so that its
  random start does not send large gradients into the pretrained layers;
  then every layer, those at pretrained_lr_scale 0.1 of the head's rate.
* freeze_batch_norm: the BatchNorm layers keep ImageNet's statistics (a few
  hundred images per class estimate them worse; batches are small).
* light augmentation (flips, zoom, shifts) and the model's dropout 0.2.

Result on 100 CIFAR-10 photos per class (upscaled): 84.8% validation
accuracy in 23 minutes on 2 CPU cores, against 61% for fast_cifar and 54%
for the seed CNN from scratch
(docs/results.md#a-few-hundred-photos-fine-tuned-against-from-scratch).
"""

from imgclf_jax.config import keys

WEIGHTS = '../shared/pretrained/efficientnet_lite0.safetensors'


def get_config():
  config = keys.get_config()
  config.dataset = 'folder:'  # set the root: --config.dataset=folder:/path
  config.model = 'efficientnet_lite0'
  config.init_from = WEIGHTS
  config.image_size = 224
  config.normalization = 'standardize'
  config.normalization_mean = (0.498, 0.498, 0.498)
  config.normalization_std = (0.502, 0.502, 0.502)
  config.augment = 'flip,zoom,shift'
  config.dropout_rate = 0.2
  config.batch_size = 32
  config.eval_batch_size = 64
  config.num_epochs = 12
  config.optimizer = 'adamw'
  config.learning_rate = 1e-3
  config.weight_decay = 1e-4
  config.lr_schedule = 'cosine'
  config.probe_epochs = 2.0
  config.pretrained_lr_scale = 0.1
  config.freeze_batch_norm = True
  return config
