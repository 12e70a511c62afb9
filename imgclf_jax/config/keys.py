"""Every config key with its default and meaning, and where eval, predict
and a resumed training take each key from.

`configs/*.py` start from `get_config()` here and change what differs; any key
can be overridden on the command line (--config.KEY=VALUE). This module
imports nothing heavy, so loading a config file stays fast; checking and
resolving a config is `configuration.py`'s job.
"""

import json

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # --- Data -----------------------------------------------------------------
  # A TFDS name ('cifar10', 'mnist', 'cifar100', ...) or 'folder:/path/to/root'
  # for an image folder laid out root/<class_name>/<image file> or
  # root/<split>/<class_name>/<image file> (data/folder_source.py).
  config.dataset = 'cifar10'
  # TFDS data_dir (None: TFDS's default, ~/tensorflow_datasets). A typed
  # placeholder, so that --config.data_dir=/path can set it.
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.train_split = 'train'
  # '' picks the dataset's own 'validation' split when it has one, otherwise
  # `validation_fraction` of `train_split` is held out (stratified per class for
  # folders, the last fraction of the split for TFDS datasets; a sliced or
  # summed TFDS train_split, e.g. 'train[:50%]', needs validation_split set).
  config.validation_split = ''
  config.validation_fraction = 0.1
  # Split evaluated by --mode=eval: 'validation' (the split above), or any
  # split of the dataset ('test', 'train', TFDS slices like 'test[:50%]').
  config.eval_split = 'validation'
  # Images are resized to image_size x image_size.
  config.image_size = 32
  # 'standardize': zero mean / unit variance per channel (statistics of the
  # training split); 'unit': pixels scaled to [0, 1].
  config.normalization = 'standardize'
  # 'standardize' measures the per-channel mean and std over the training
  # split's resized images when it holds at most this many; a larger split
  # is measured on this many of its images, drawn with a fixed seed
  # (source_base.SAMPLE_SEED, not config.seed) from the
  # split's global index space, the same on every process: an image folder's
  # files at uniformly drawn positions; a TFDS split's records in
  # tfds_source.SAMPLE_BLOCKS contiguous runs at drawn positions, so that
  # only those records are read (TFDS shuffled the records when it prepared
  # the dataset; one prepared unshuffled is read whole, decoding only the
  # sample). A resumed run, eval and predict use the checkpoint's statistics.
  config.normalization_sample_size = 50_000
  # Given statistics instead ([0, 1] pixel units, one per channel; std > 0):
  # e.g. --config.normalization_mean='(0.485,0.456,0.406)'
  # --config.normalization_std='(0.229,0.224,0.225)'. () = measure them.
  config.normalization_mean = ()
  config.normalization_std = ()
  # Keep the decoded, resized images of the training and validation splits
  # in memory after their first pass (image_size^2 * channels bytes per
  # image): True, False, or 'auto': cache when the two splits together take
  # at most cache_budget_gb (1 GB = 1e9 bytes; checked by size, not against
  # the machine's free memory), else decode the files every epoch. Another
  # split, and any split --mode=eval reads, counts alone against the budget
  # (eval reads nothing of the training split). The log says what
  # was decided, with the numbers. Nothing is cached with crop='random_resized'.
  config.cache = ml_collections.FieldReference('auto', field_type=object)
  config.cache_budget_gb = 8.0
  # 'none': each image is resized whole to image_size x image_size (aspect
  # ratio not kept). 'random_resized': the Inception-style crop of the Flax
  # ImageNet example, for large source images: training decodes a random
  # window of each image (area 8% to 100%, aspect ratio 3/4 to 4/3; the
  # centre crop when 10 tries find none) and resizes it; evaluation and
  # predict decode the central square of side 0.875 x the shorter side.
  # JPEGs are decoded only in the window (tf.io.decode_and_crop_jpeg); other
  # formats are decoded whole, then cropped. The crops are fixed by config.seed
  # and the epoch. Not combinable with oversample, data_on_device or cache=True.
  config.crop = 'none'
  config.shuffle_buffer_size = 50_000
  # Keep the whole (resized, uint8) training split in device memory and draw,
  # augment and normalise each batch inside the jitted train step, instead of
  # in tf.data on the host (imgclf_jax/training/device_data.py). For datasets that fit
  # on the accelerator (CIFAR-10: 138 MB per device); not combinable with
  # oversample or minority_augment. Evaluation always uses tf.data.
  config.data_on_device = False

  # --- Augmentation (training split only) -------------------------------------
  # Comma-separated subset of: flip, rotate, zoom, shift, translate,
  # brightness ('' = none).
  config.augment = 'flip,rotate,zoom,shift,brightness'
  config.rotation_degrees = 15.0    # uniform in [-d, d]
  config.zoom_range = 0.1           # scale uniform in [1 - z, 1 + z]
  config.shift_fraction = 0.1       # translation up to this fraction of a side
  config.brightness_delta = 0.1     # added to [0, 1] pixels, uniform in [-d, d]
  # translate: a whole-pixel shift, uniform in [-p, p] on each axis, edges
  # reflected (the random crop of padded images of CIFAR recipes).
  config.translate_pixels = 2

  # --- Class imbalance (training split) -----------------------------------------
  # Before training, class_distribution.png/.json show the examples per class
  # of the training and validation splits; a warning is logged when the largest
  # class has more than this many times the examples of the smallest.
  config.imbalance_warning_ratio = 3.0
  # Weight of each example's loss term by its class: 'none'; 'balanced'
  # (inverse frequency, n / (num_classes * n_class)); one number per class in
  # class order ('1,1,4'); or class=weight pairs, others 1 ('cat=4,dog=2').
  config.class_weights = 'none'
  # Draw training examples so every class is seen about equally often (one
  # shuffled, repeated stream per class, mixed with equal probabilities; an
  # epoch keeps its number of steps).
  config.oversample = False
  # Stronger augmentation for minority-class examples only, in place of
  # `augment` for them: a subset of the augmentation names above ('' = off),
  # with rotation_degrees, zoom_range, shift_fraction and brightness_delta
  # multiplied by minority_augment_scale.
  config.minority_augment = ''
  config.minority_augment_scale = 2.0
  # A minority class has fewer than this fraction of the largest class's
  # training examples (used by minority_augment and the imbalance report).
  config.minority_fraction = 0.5

  # --- Model ------------------------------------------------------------------
  # 'cnn' (the seed CNN), 'fast_cifar' (airbench94), 'resnet18' (CIFAR
  # stem), 'resnet50' (ImageNet stem), 'efficientnet_lite0';
  # models/registry.py's table has their sizes.
  config.model = 'cnn'
  # Dropout before the classifier: the CNN's and efficientnet_lite0's (0 for
  # the others).
  config.dropout_rate = 0.5
  # Start a new training run from these weights instead of random ones ('':
  # none): a .safetensors file with PyTorch names and layouts (timm's or
  # torchvision's resnet18/resnet50, efficientnet-lite-pytorch's
  # efficientnet_lite0), or a workdir of this program (its latest
  # checkpoint; <workdir>/checkpoints/<step> for another step). Every tensor
  # must match the model's by name and shape, except the classifier head,
  # which starts new when the class count differs (models/pretrained/). The
  # checkpoints record the path and its SHA-256; a resumed run continues from
  # its checkpoint and does not read the weights again.
  config.init_from = ''
  # The ResNets' layout: 'flax' (Flax's 'SAME' padding; resnet18 with the
  # CIFAR stem) or 'torch' (torchvision's and timm's: PyTorch's symmetric
  # padding, the ImageNet stem). init_from sets it to its weights' layout.
  config.model_layout = 'flax'
  # The fine-tuning recipe (with init_from; models with a classifier head
  # registry.HEADS names):
  # epochs during which only the classifier head trains (a linear probe);
  # every layer trains after them (0: all from the start). The other layers
  # get zero updates during the probe (their optimizer state still
  # follows their gradients), so the optimizer state keeps one shape and a
  # run resumed inside the probe continues exactly.
  config.probe_epochs = 0.0
  # The steps of every layer but the head are this many times the head's
  # (timm's layer-wise learning rate; 0.1 is common for fine-tuning).
  config.pretrained_lr_scale = 1.0
  # True: BatchNorm layers use their running (pretrained) statistics in
  # training too and never update them (Keras's fine-tuning advice; their
  # scale and bias still train); False: batch statistics, as from scratch.
  # resnet18, resnet50 and efficientnet_lite0.
  config.freeze_batch_norm = False
  # Convolutions: 'fast' (fast_conv.py's, whose gradients XLA:CPU runs
  # faster), 'xla' (nn.Conv / nn.max_pool: cuDNN on GPU, the TPU's own), or
  # 'auto': 'fast' on CPU for the models that have it, else 'xla'.
  config.conv_impl = 'auto'
  # fast_cifar: epochs during which the whitening layer's bias is trained
  # (its kernel is never trained).
  config.whiten_bias_epochs = 3.0
  # Compute in bfloat16 (mixed precision): activations, convolutions and
  # matmuls in bfloat16; parameters, optimizer state, loss and metrics in
  # float32. For accelerators with bfloat16 units (TPU, NVIDIA Ampere and
  # later); on CPU, XLA runs it slower than float32 (BENCHMARKS.md).
  config.half_precision = False

  # --- Optimisation -----------------------------------------------------------
  config.batch_size = 128        # global batch, split over all local devices
  config.eval_batch_size = 256
  config.num_epochs = 20
  # 'adam' (AdamW when weight_decay > 0), 'adamw' or 'sgd' (with momentum,
  # Nesterov's if nesterov).
  config.optimizer = 'adam'
  config.momentum = 0.9
  config.nesterov = False
  config.learning_rate = 1e-3
  # A linear warmup over warmup_epochs from lr_start_fraction x
  # learning_rate, then 'constant', 'cosine' or 'linear' decay to
  # lr_end_fraction x learning_rate at the last step.
  config.lr_schedule = 'constant'
  config.warmup_epochs = 0.0
  config.lr_start_fraction = 0.0
  config.lr_end_fraction = 0.0
  # Decoupled weight decay: each step subtracts lr(t) * weight_decay * w.
  config.weight_decay = 0.0
  # Steps of normalisation-layer biases are this many times larger (their
  # weight decay is not); airbench94 uses 64.
  config.norm_bias_lr_scale = 1.0
  config.label_smoothing = 0.0
  # > 0: keep an exponential moving average of the weights (and BatchNorm
  # statistics) with this decay (min(decay, (1 + t) / (10 + t)) at step t);
  # eval, predict and the best checkpoint use it; training continues from
  # the raw weights.
  config.ema_decay = 0.0
  # > 0: airbench94's lookahead (steps.Lookahead): from lookahead_start_epochs
  # on, every this many steps the slow weights move towards the trained ones
  # by 1 - lookahead_decay**every * (step / total)**lookahead_decay_power,
  # and training continues from the slow weights (also at every epoch's end).
  config.lookahead_every_steps = 0
  config.lookahead_start_epochs = 3.0
  config.lookahead_decay = 0.95
  config.lookahead_decay_power = 3.0
  config.seed = 0
  # Compute each step's gradient as the mean over this many equal
  # microbatches of the per-device batch (same gradient; lets XLA:CPU use
  # several cores). An explicit value must divide the per-device batch. 0:
  # automatic (2 on CPU when it divides it, else 1; 1 on GPU/TPU). Dropout
  # masks depend on each example's place in the global batch, not on the
  # microbatches or devices, so the same seed trains the same with any of
  # them (up to float rounding).
  config.microbatches = 0

  # --- Evaluation report and prediction -----------------------------------------
  # --mode=eval reports top-k accuracy (n/a, null, when top_k is at least
  # the number of classes: it would always be 1); --mode=predict prints the
  # top-k classes.
  config.top_k = 5
  # Test-time augmentation of eval, the report, predict and training's last
  # validation: 'none', 'flip' (mean of the image and its mirror) or
  # 'flip_translate' (also one-pixel shifts; tta.tta_views).
  config.tta = 'none'
  # Images in the eval report's example grid and in each of its galleries
  # (most confidently wrong, least confident right).
  config.report_images = 24

  # --- Checkpoints and logging --------------------------------------------------
  config.checkpoint_every_epochs = 1
  # > 0: also a checkpoint every this many steps inside epochs (a run
  # resumes at its step, with the batches, augmentations and dropout masks
  # an uninterrupted run has there). SIGTERM and Ctrl-C always save one at
  # the step they stop. Validation and --step=best stay per epoch.
  config.checkpoint_every_steps = 0
  # Stop when early_stopping_metric ('validation_loss' or
  # 'validation_accuracy') has not improved for this many epochs (0: never);
  # the last and the best checkpoints are kept as always.
  config.early_stopping_patience = 0
  config.early_stopping_metric = 'validation_loss'
  # The latest checkpoints kept; the one with the best validation accuracy is
  # kept besides them (--mode=eval --step=best).
  config.max_checkpoints_to_keep = 3
  # The running loss, accuracy, img/s and ETA (on the progress bar, or log
  # lines where there is no terminal; and TensorBoard) every this many
  # steps, and after any step that ends log_every_seconds or more after the
  # last time they were shown (0: by steps only).
  config.log_every_steps = 50
  config.log_every_seconds = 30.0

  return config


# ----------------------------------------------------------------------------
# Where each key comes from outside a fresh training run.
#
#   resume   FIXED: a run resumed from a checkpoint must keep the checkpoint's
#            value (shapes, data or step positions depend on it); other keys
#            may change on resume.
#   eval     FLAGS: --mode=eval takes the value of --config (when given);
#            DATA: as FLAGS when --config's dataset is the checkpoint's or
#            --config.dataset is set on the command line; otherwise (a config
#            file for another dataset) the checkpoint's value, unless the key
#            is set on the command line;
#            MODEL: the checkpoint's value, with a warning when --config's
#            differs; other keys: the checkpoint's value.
#   predict  FLAGS or (others) the checkpoint's value, as for eval.
#
# A key that a checkpoint's saved config lacks (written before the key
# existed) reads as its default there (configuration.for_inference); each
# key's default is the behaviour from before it existed.
#
# The normalisation statistics of a resumed run, of eval and of predict are
# the checkpoint's (its metadata), whatever normalization_sample_size,
# normalization_mean and normalization_std say (a resumed run logs a warning
# where they differ); a new run measures or takes them.

FIXED, FLAGS, DATA, MODEL = 'fixed', 'flags', 'data', 'model'

KEY_ORIGINS = {
    # key                  resume  eval   predict
    'dataset':             (FIXED, DATA,  None),
    'data_dir':            (None,  DATA,  None),
    'train_split':         (None,  DATA,  None),
    'validation_split':    (None,  DATA,  None),
    'validation_fraction': (None,  DATA,  None),
    'eval_split':          (None,  FLAGS, None),
    'eval_batch_size':     (None,  FLAGS, FLAGS),
    'cache':               (None,  FLAGS, None),
    'cache_budget_gb':     (None,  FLAGS, None),
    'crop':                (None,  MODEL, None),
    'model':               (FIXED, MODEL, None),
    'model_layout':        (FIXED, None,  None),
    'optimizer':           (FIXED, None,  None),
    'ema_decay':           (FIXED, None,  None),
    'lookahead_every_steps': (FIXED, None, None),
    'norm_bias_lr_scale':  (FIXED, None,  None),
    'probe_epochs':        (FIXED, None,  None),
    'pretrained_lr_scale': (FIXED, None,  None),
    'freeze_batch_norm':   (FIXED, None,  None),
    'tta':                 (None,  FLAGS, FLAGS),
    'image_size':          (FIXED, MODEL, None),
    'normalization':       (FIXED, MODEL, None),
    'normalization_sample_size': (None, None, None),
    'normalization_mean':  (None,  None,  None),
    'normalization_std':   (None,  None,  None),
    'batch_size':          (FIXED, None,  None),
    'top_k':               (None,  FLAGS, FLAGS),
    'report_images':       (None,  FLAGS, None),
}
_COLUMNS = ('resume', 'eval', 'predict')


def keys_where(column: str, origin: str) -> tuple[str, ...]:
  """The keys whose `column` ('resume', 'eval', 'predict') is `origin`."""
  i = _COLUMNS.index(column)
  return tuple(k for k, row in KEY_ORIGINS.items() if row[i] == origin)


def to_dict(config: ml_collections.ConfigDict) -> dict:
  """A config as plain JSON types (what checkpoints store)."""
  return json.loads(config.to_json_best_effort())


def differences(saved_config: dict, config, keys) -> list[str]:
  """'key: checkpoint X vs now Y' for each of `keys` that differs (a key
  the checkpoint lacks reads as its default, see above)."""
  current = to_dict(config)
  defaults = to_dict(get_config())
  saved = {k: saved_config.get(k, defaults.get(k)) for k in keys}
  return [f'{k}: checkpoint {saved[k]!r} vs now {current.get(k)!r}'
          for k in keys if saved[k] != current.get(k)]
