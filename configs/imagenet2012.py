"""ImageNet (ILSVRC 2012): ResNet-50, 90 epochs of SGD with Nesterov
momentum at batch 1024, cosine schedule with 5 warmup epochs, bfloat16.

    python main.py --config=configs/imagenet2012.py --workdir=runs/imagenet2012

Result: not measured (docs/results.md#not-measured). For several GPUs or a
TPU host: the global batch of 1024 is split over all local devices.

Data: TFDS 'imagenet2012' needs a manual download. Get ILSVRC2012_img_train.tar
and ILSVRC2012_img_val.tar from https://image-net.org/ into a folder, then
prepare it once (about 156 GiB of TFRecords in the TFDS data_dir):

    python -c "import tensorflow_datasets as tfds; \
      tfds.builder('imagenet2012').download_and_prepare(download_config= \
      tfds.download.DownloadConfig(manual_dir='/path/to/downloads'))"

and pass --config.data_dir=... if it is not TFDS's default. The 50,000
'validation' images are the validation split (validation_split below); TFDS's
'test' split has no labels.

The optimisation is the Flax ImageNet example's (github.com/google/flax,
examples/imagenet: configs/tpu.py and train.py; it trains 100 epochs, this
config the standard 90):

* SGD, momentum 0.9, Nesterov; learning rate 0.1 per 256 images (the example's
  `config.learning_rate * config.batch_size / 256`), so 0.4 at batch 1024;
  5 warmup epochs, then cosine decay to 0.
* weight decay: the example adds 0.5 * 1e-4 * |w|^2 of the kernels (ndim > 1)
  to the loss, a coupled L2 that goes through the momentum buffer. This
  program's weight decay is decoupled (added to the update after the momentum,
  times the learning rate), where 1e-4 / (1 - 0.9) = 1e-3 decays the weights
  as much while they change little over the ~10 steps the buffer remembers
  (see configs/cifar10_resnet18.py); with a coupled optimizer it would be
  1e-4. The example leaves BatchNorm scales and biases and the Dense bias
  undecayed; this program decays every parameter (as PyTorch's SGD does).
* No label smoothing and no dropout (the example has neither), no EMA.
* bfloat16 computation (half_precision, as the example's TPU config),
  parameters and BatchNorm in float32.

The input pipeline is the example's (crop='random_resized', preprocess.py):
training decodes a random-resized crop of each JPEG (area 8% to 100%,
aspect ratio 3/4 to 4/3, tf.io.decode_and_crop_jpeg), evaluation the central
square of 0.875 x the shorter side (the example's 224 of 256), both resized to
224 x 224, plus a horizontal flip for training. One difference: the resize
here is antialiased bilinear (resize_image), the example's bicubic.

normalization 'unit' ([0, 1] pixels): the stem convolution (no bias) is
followed by BatchNorm, which removes a per-channel shift and scale of the
input anyway (up to the zero padding at the borders); 'standardize' would
measure a fixed sample of 50,000 training images first
(normalization_sample_size). Nothing is cached (crop decodes every file every
epoch; the resized training split would be about 190 GB). The 10,000-record
shuffle buffer holds encoded JPEGs (ILSVRC2012_img_train.tar's 138 GB over
1.28M files: about 110 KB each, 1.1 GB) on top of TFDS's shuffled files.
"""

from imgclf_jax.config import keys


def get_config():
  config = keys.get_config()
  config.dataset = 'imagenet2012'
  config.train_split = 'train'
  config.validation_split = 'validation'
  config.image_size = 224
  config.normalization = 'unit'
  config.crop = 'random_resized'
  config.shuffle_buffer_size = 10_000
  config.data_on_device = False

  config.model = 'resnet50'
  config.dropout_rate = 0.0
  config.half_precision = True

  config.optimizer = 'sgd'
  config.momentum = 0.9
  config.nesterov = True
  config.batch_size = 1024
  config.eval_batch_size = 1024
  config.learning_rate = 0.4        # 0.1 * batch_size / 256
  config.weight_decay = 1e-3        # decoupled; = the example's coupled 1e-4
  config.lr_schedule = 'cosine'
  config.warmup_epochs = 5.0
  config.num_epochs = 90
  config.label_smoothing = 0.0
  config.ema_decay = 0.0

  config.augment = 'flip'
  config.tta = 'none'
  config.log_every_steps = 100
  return config
