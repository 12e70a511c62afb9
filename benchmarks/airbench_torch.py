"""airbench94 (Keller Jordan, arXiv 2404.00498), ported faithfully to CPU
PyTorch, for a diagnostic on this project's data.

Question it answers: imgclf_jax's fast_cifar + configs/cifar10_fast.py reaches
about 90.5% (TTA) on the CIFAR-10 JPEG (quality 75) folder, where airbench94
publishes 94.01% on the official CIFAR-10 test set. Is the gap the data (JPEG
q75, 45,000 training images) or imgclf_jax's implementation? This script runs
the reference recipe, unchanged, on exactly the train/validation split that
imgclf_jax uses (`folder:` source, 10% of every class held out with
folder_source.FOLDER_SPLIT_SEED); the validation split plays airbench's test
set.

Source ported: KellerJordan/cifar10-airbench, airbench94.py (the uncompiled
variant of airbench94_compiled.py). Kept exactly as there: the network
(2x2 whitening conv from the eigenvectors of the uncentred covariance of all
2x2 patches of the first 5,000 training images, eps 5e-4, +/- filters, its
bias trained for 3 epochs then frozen; conv groups 64/256/256 of conv3x3 -
maxpool2 - BN - GELU - conv3x3 - BN - GELU; dirac-initialised convs;
BatchNorm eps 1e-12, PyTorch momentum 0.4, weight frozen at 1; MaxPool2d(3);
linear without bias; x 1/9), the optimizer (torch.optim.SGD, Nesterov,
momentum 0.85, summed label-smoothed (0.2) loss, lr = 11.5 / kilostep_scale,
wd = 0.0153 * 1024 / kilostep_scale passed as weight_decay = wd / lr per
group, BatchNorm biases at 64x lr), the triangular LambdaLR schedule
(0.2 -> 1 at 23% -> 0.07), the loader (pre-flip once at random, then flip
every image together on odd epochs; translate 2 by random crops of a
reflect-padded copy; drop_last), the lookahead (from epoch 3, every 5 steps,
decay 0.95**5 * (step / total)**3, over the whole state_dict including
BatchNorm running statistics, copied back into the network, and once more
at the end of every epoch), TTA level 2 (0.5 plain+mirror, 0.5 mean of
reflect-pad-1 shifts by (-1,-1) and (+1,+1), each with mirror), 9.9 epochs,
batch size 1024.

Changes forced by the setting (none change the recipe):
  * float32 on CPU (the original runs the network in fp16 on CUDA with
    BatchNorm in fp32); no torch.compile; channels_last only with
    --channels_last.
  * torch.manual_seed(seed): the original is unseeded.
  * The data: imgclf_jax's split as uint8 arrays (see `dump_split`), 45,000
    train / 5,000 validation instead of 50,000 / 10,000. imgclf_jax gives the
    training images sorted by class; airbench's "first 5,000 training images"
    for the whitening come from CIFAR-10's own (class-mixed) file order, so
    the training arrays are put once into a random order (numpy seed = the
    run's seed) before anything else. Nothing else depends on that order
    (every epoch is shuffled by torch.randperm).
  * Validation accuracy is computed over all 5,000 images exactly (the
    original averages per-batch accuracies of 2,000-image batches, which is
    exact for its 10,000 test images but would overweight the last partial
    batch here).
  * Per-epoch lines also give the epoch's wall time; a JSON result is
    written to --json.

Run (from the repository root; 1 thread, the data dumped first by the
project's own venv, which has TensorFlow):

    .venv/bin/python -m benchmarks.airbench_torch --dump_data \
        --data=/tmp/airbench/cifar10_jpeg_split.npz
    PYTHONPATH=/tmp/torch-pkgs .venv/bin/python -m benchmarks.airbench_torch \
        --seed=0 --data=/tmp/airbench/cifar10_jpeg_split.npz \
        --json=/tmp/airbench_seed0.json > /tmp/airbench_seed0.log 2>&1

--time_steps=N trains N steps only and prints seconds per step (to estimate
a run); it is not a result.
"""

import argparse
import json
import os
import sys
import time
from math import ceil

import numpy as np

DEFAULT_DATA = '/tmp/airbench/cifar10_jpeg_split.npz'
DEFAULT_DATASET = 'folder:/work/shared/datasets/cifar10-jpeg'

#############################################
#            Setup/Hyperparameters          #
#############################################

hyp = {
    'opt': {
        'train_epochs': 9.9,
        'batch_size': 1024,
        'lr': 11.5,                 # learning rate per 1024 examples
        'momentum': 0.85,
        'weight_decay': 0.0153,     # weight decay per 1024 examples (decoupled from learning rate)
        'bias_scaler': 64.0,        # scales up learning rate (but not weight decay) for BatchNorm biases
        'label_smoothing': 0.2,
        'ema': {
            'start_epochs': 3,
            'decay_base': 0.95,
            'decay_pow': 3.,
            'every_n_steps': 5,
        },
        'whiten_bias_epochs': 3,    # how many epochs to train the whitening layer bias before freezing
    },
    'aug': {
        'flip': True,
        'translate': 2,
    },
    'net': {
        'whitening': {
            'kernel_size': 2,
        },
        'batchnorm_momentum': 0.6,
        'base_width': 64,
        'scaling_factor': 1/9,
        'tta_level': 2,         # the level of test-time augmentation: 0=none, 1=mirror, 2=mirror+translate
    },
}


#############################################
#     The data: imgclf_jax's own split      #
#############################################

def dump_split(dataset: str, path: str):
  """Writes imgclf_jax's train/validation split of `dataset` to `path` (.npz:
  uint8 NHWC images, int32 labels, file names). Needs the project's venv
  (TensorFlow); torch is not imported."""
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from configs import cifar10_fast
  from imgclf_jax.config import specs
  from imgclf_jax.data import input_pipeline
  from imgclf_jax.data import sources
  config = cifar10_fast.get_config()
  config.dataset = dataset
  config.image_size = 32
  config.normalization = 'unit'   # no statistics pass: only the uint8 arrays are used
  data = specs.data_spec(config)
  source = sources.make_source(data.source)
  pipeline = input_pipeline.InputPipeline(source, data)
  train_x, train_y = pipeline.arrays('train')
  val_x, val_y = pipeline.arrays('validation')
  train_files, val_files = source.files('train'), source.files('validation')
  assert not set(train_files) & set(val_files)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez(path, train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y,
           train_files=train_files, val_files=val_files)
  print('wrote', path, train_x.shape, val_x.shape,
        'per class', np.bincount(train_y), np.bincount(val_y))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--data', default=DEFAULT_DATA)
  parser.add_argument('--dataset', default=DEFAULT_DATASET,
                      help='for --dump_data: the imgclf_jax config.dataset')
  parser.add_argument('--dump_data', action='store_true',
                      help='write --data from imgclf_jax and exit (venv python)')
  parser.add_argument('--threads', type=int, default=1)
  parser.add_argument('--channels_last', action='store_true')
  parser.add_argument('--time_steps', type=int, default=0,
                      help='train this many steps only and print s/step')
  parser.add_argument('--json', default='')
  args = parser.parse_args(argv)
  if args.dump_data:
    dump_split(args.dataset, args.data)
    return
  run(args)


def run(args):
  import torch
  from torch import nn
  import torch.nn.functional as F

  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  memory_format = torch.channels_last if args.channels_last else torch.contiguous_format

  #############################################
  #                DataLoader                 #
  #############################################

  CIFAR_MEAN = torch.tensor((0.4914, 0.4822, 0.4465))
  CIFAR_STD = torch.tensor((0.2470, 0.2435, 0.2616))

  def normalize(images):  # T.Normalize(CIFAR_MEAN, CIFAR_STD) on NCHW
    return (images - CIFAR_MEAN.view(1, 3, 1, 1)) / CIFAR_STD.view(1, 3, 1, 1)

  def batch_flip_lr(inputs):
    flip_mask = (torch.rand(len(inputs), device=inputs.device) < 0.5).view(-1, 1, 1, 1)
    return torch.where(flip_mask, inputs.flip(-1), inputs)

  def batch_crop(images, crop_size):
    r = (images.size(-1) - crop_size)//2
    shifts = torch.randint(-r, r+1, size=(len(images), 2), device=images.device)
    images_out = torch.empty((len(images), 3, crop_size, crop_size), device=images.device, dtype=images.dtype)
    # The two cropping methods in this if-else produce equivalent results, but the second is faster for r > 2.
    if r <= 2:
      for sy in range(-r, r+1):
        for sx in range(-r, r+1):
          mask = (shifts[:, 0] == sy) & (shifts[:, 1] == sx)
          images_out[mask] = images[mask, :, r+sy:r+sy+crop_size, r+sx:r+sx+crop_size]
    else:
      images_tmp = torch.empty((len(images), 3, crop_size, crop_size+2*r), device=images.device, dtype=images.dtype)
      for s in range(-r, r+1):
        mask = (shifts[:, 0] == s)
        images_tmp[mask] = images[mask, :, r+s:r+s+crop_size, :]
      for s in range(-r, r+1):
        mask = (shifts[:, 1] == s)
        images_out[mask] = images_tmp[mask, :, :, r+s:r+s+crop_size]
    return images_out

  class CifarLoader:
    """airbench's CifarLoader over given uint8 NHWC arrays (float32, CPU)."""

    def __init__(self, images_u8, labels, batch_size=500, aug=None, train=True,
                 drop_last=None, shuffle=None):
      self.images = torch.from_numpy(images_u8).float().div(255).permute(0, 3, 1, 2).contiguous()
      self.labels = torch.from_numpy(labels.astype(np.int64))
      self.normalize = normalize
      self.proc_images = {}  # Saved results of image processing to be done on the first epoch
      self.epoch = 0
      self.aug = aug or {}
      for k in self.aug.keys():
        assert k in ['flip', 'translate'], 'Unrecognized key: %s' % k
      self.batch_size = batch_size
      self.drop_last = train if drop_last is None else drop_last
      self.shuffle = train if shuffle is None else shuffle

    def __len__(self):
      return len(self.images)//self.batch_size if self.drop_last else ceil(len(self.images)/self.batch_size)

    def __iter__(self):
      if self.epoch == 0:
        images = self.proc_images['norm'] = self.normalize(self.images)
        # Pre-flip images in order to do every-other epoch flipping scheme
        if self.aug.get('flip', False):
          images = self.proc_images['flip'] = batch_flip_lr(images)
        # Pre-pad images to save time when doing random translation
        pad = self.aug.get('translate', 0)
        if pad > 0:
          self.proc_images['pad'] = F.pad(images, (pad,)*4, 'reflect')

      if self.aug.get('translate', 0) > 0:
        images = batch_crop(self.proc_images['pad'], self.images.shape[-2])
      elif self.aug.get('flip', False):
        images = self.proc_images['flip']
      else:
        images = self.proc_images['norm']
      # Flip all images together every other epoch. This increases diversity relative to random flipping
      if self.aug.get('flip', False):
        if self.epoch % 2 == 1:
          images = images.flip(-1)

      self.epoch += 1

      indices = (torch.randperm if self.shuffle else torch.arange)(len(images), device=images.device)
      for i in range(len(self)):
        idxs = indices[i*self.batch_size:(i+1)*self.batch_size]
        yield (images[idxs].contiguous(memory_format=memory_format), self.labels[idxs])

  #############################################
  #            Network Components             #
  #############################################

  class Flatten(nn.Module):
    def forward(self, x):
      return x.view(x.size(0), -1)

  class Mul(nn.Module):
    def __init__(self, scale):
      super().__init__()
      self.scale = scale
    def forward(self, x):
      return x * self.scale

  class BatchNorm(nn.BatchNorm2d):
    def __init__(self, num_features, eps=1e-12, momentum=hyp['net']['batchnorm_momentum'],
                 weight=False, bias=True):
      super().__init__(num_features, eps=eps, momentum=1-momentum)
      self.weight.requires_grad = weight
      self.bias.requires_grad = bias
      # Note that PyTorch already initializes the weights to one and bias to zero

  class Conv(nn.Conv2d):
    def __init__(self, in_channels, out_channels, kernel_size=3, padding='same', bias=False):
      super().__init__(in_channels, out_channels, kernel_size=kernel_size, padding=padding, bias=bias)

    def reset_parameters(self):
      super().reset_parameters()
      if self.bias is not None:
        self.bias.data.zero_()
      # Create an implicit residual via identity initialization
      w = self.weight.data
      torch.nn.init.dirac_(w[:w.size(1)])

  class ConvGroup(nn.Module):
    def __init__(self, channels_in, channels_out):
      super().__init__()
      self.conv1 = Conv(channels_in,  channels_out)
      self.pool = nn.MaxPool2d(2)
      self.norm1 = BatchNorm(channels_out)
      self.conv2 = Conv(channels_out, channels_out)
      self.norm2 = BatchNorm(channels_out)
      self.activ = nn.GELU()

    def forward(self, x):
      x = self.conv1(x)
      x = self.pool(x)
      x = self.norm1(x)
      x = self.activ(x)
      x = self.conv2(x)
      x = self.norm2(x)
      x = self.activ(x)
      return x

  def make_net():
    widths = {
        'block1': (1 * hyp['net']['base_width']),  # 64  w/ width at base value
        'block2': (4 * hyp['net']['base_width']),  # 256 w/ width at base value
        'block3': (4 * hyp['net']['base_width']),  # 256 w/ width at base value
    }
    whiten_conv_width = 2 * 3 * hyp['net']['whitening']['kernel_size']**2
    net = nn.Sequential(
        Conv(3, whiten_conv_width, kernel_size=hyp['net']['whitening']['kernel_size'], padding=0, bias=True),
        nn.GELU(),
        ConvGroup(whiten_conv_width, widths['block1']),
        ConvGroup(widths['block1'],  widths['block2']),
        ConvGroup(widths['block2'],  widths['block3']),
        nn.MaxPool2d(3),
        Flatten(),
        nn.Linear(widths['block3'], 10, bias=False),
        Mul(hyp['net']['scaling_factor']),
    )
    net[0].weight.requires_grad = False
    # Original: net.half().cuda(), channels_last, BatchNorm kept in float. Here: float32 CPU.
    net = net.to(memory_format=memory_format)
    return net

  #############################################
  #       Whitening Conv Initialization       #
  #############################################

  def get_patches(x, patch_shape):
    c, (h, w) = x.shape[1], patch_shape
    return x.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c, h, w).float()

  def get_whitening_parameters(patches):
    n, c, h, w = patches.shape
    patches_flat = patches.view(n, -1)
    est_patch_covariance = (patches_flat.T @ patches_flat) / n
    eigenvalues, eigenvectors = torch.linalg.eigh(est_patch_covariance, UPLO='U')
    return eigenvalues.flip(0).view(-1, 1, 1, 1), eigenvectors.T.reshape(c*h*w, c, h, w).flip(0)

  def init_whitening_conv(layer, train_set, eps=5e-4):
    patches = get_patches(train_set, patch_shape=layer.weight.data.shape[2:])
    eigenvalues, eigenvectors = get_whitening_parameters(patches)
    eigenvectors_scaled = eigenvectors / torch.sqrt(eigenvalues + eps)
    layer.weight.data[:] = torch.cat((eigenvectors_scaled, -eigenvectors_scaled))

  ############################################
  #                Lookahead                 #
  ############################################

  class LookaheadState:
    def __init__(self, net):
      self.net_ema = {k: v.clone() for k, v in net.state_dict().items()}

    def update(self, net, decay):
      for ema_param, net_param in zip(self.net_ema.values(), net.state_dict().values()):
        if net_param.dtype in (torch.half, torch.float):
          ema_param.lerp_(net_param, 1-decay)
          # Copy the ema parameters back to the network, similarly to the Lookahead optimizer
          net_param.copy_(ema_param)

  ############################################
  #                 Logging                  #
  ############################################

  def print_columns(columns_list, is_head=False, is_final_entry=False):
    print_string = ''
    for col in columns_list:
      print_string += '|  %s  ' % col
    print_string += '|'
    if is_head:
      print('-'*len(print_string))
    print(print_string)
    if is_head or is_final_entry:
      print('-'*len(print_string))
    sys.stdout.flush()

  logging_columns_list = ['run   ', 'epoch', 'train_loss', 'val_loss', 'train_acc', 'val_acc',
                          'tta_val_acc', 'epoch_seconds', 'total_time_seconds']

  def print_training_details(variables, is_final_entry):
    formatted = []
    for col in logging_columns_list:
      var = variables.get(col.strip(), None)
      if type(var) in (int, str):
        res = str(var)
      elif type(var) is float:
        res = '{:0.4f}'.format(var)
      else:
        assert var is None
        res = ''
      formatted.append(res.rjust(len(col)))
    print_columns(formatted, is_final_entry=is_final_entry)

  ############################################
  #                  Data                    #
  ############################################

  data = np.load(args.data)
  train_x, train_y = data['train_x'], data['train_y']
  val_x, val_y = data['val_x'], data['val_y']
  # imgclf_jax's train split is sorted by class; CIFAR-10's train.pt is not.
  # One fixed random order, so that "the first 5,000 training images" (the
  # whitening's) are a class-mixed sample as in airbench.
  order = np.random.default_rng(args.seed).permutation(len(train_x))
  train_x, train_y = train_x[order], train_y[order]
  print(f'data {args.data}: train {train_x.shape} val {val_x.shape}; '
        f'whitening images per class {np.bincount(train_y[:5000], minlength=10).tolist()}; '
        f'torch {torch.__version__}, threads {torch.get_num_threads()}, '
        f'channels_last {args.channels_last}, seed {args.seed}', flush=True)

  ############################################
  #             Train and Eval               #
  ############################################

  run = args.seed
  batch_size = hyp['opt']['batch_size']
  epochs = hyp['opt']['train_epochs']
  momentum = hyp['opt']['momentum']
  # Assuming  gradients are constant in time, for Nesterov momentum, the below ratio is how much
  # larger the default steps will be than the underlying per-example gradients. We divide the
  # learning rate by this ratio in order to ensure steps are the same scale as gradients, regardless
  # of the choice of momentum.
  kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
  lr = hyp['opt']['lr'] / kilostep_scale  # un-decoupled learning rate for PyTorch SGD
  wd = hyp['opt']['weight_decay'] * batch_size / kilostep_scale
  lr_biases = lr * hyp['opt']['bias_scaler']

  loss_fn = nn.CrossEntropyLoss(label_smoothing=hyp['opt']['label_smoothing'], reduction='none')

  train_augs = dict(flip=hyp['aug']['flip'], translate=hyp['aug']['translate'])
  train_loader = CifarLoader(train_x, train_y, batch_size=batch_size, aug=train_augs, train=True)
  test_loader = CifarLoader(val_x, val_y, batch_size=2000, train=False)

  def triangle(steps, start=0, end=0, peak=0.5):
    xp = torch.tensor([0, int(peak * steps), steps])
    fp = torch.tensor([start, 1, end])
    x = torch.arange(1+steps)
    m = (fp[1:] - fp[:-1]) / (xp[1:] - xp[:-1])
    b = fp[:-1] - (m * xp[:-1])
    indices = torch.sum(torch.ge(x[:, None], xp[None, :]), 1) - 1
    indices = torch.clamp(indices, 0, len(m) - 1)
    return m[indices] * x + b[indices]

  total_train_steps = ceil(len(train_loader) * epochs)
  lr_schedule = triangle(total_train_steps, start=0.2, end=0.07, peak=0.23)

  model = make_net()
  lookahead_state = None
  current_steps = 0

  norm_biases = [p for k, p in model.named_parameters() if 'norm' in k and p.requires_grad]
  other_params = [p for k, p in model.named_parameters() if 'norm' not in k and p.requires_grad]
  param_configs = [dict(params=norm_biases, lr=lr_biases, weight_decay=wd/lr_biases),
                   dict(params=other_params, lr=lr, weight_decay=wd/lr)]
  optimizer = torch.optim.SGD(param_configs, momentum=momentum, nesterov=True)
  # float(): the original's lambda returns a 0-d tensor (so param_group['lr'] becomes one).
  scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: float(lr_schedule[i]))
  print(f'steps/epoch {len(train_loader)}, total_train_steps {total_train_steps}, '
        f'lr {lr:.6g}, wd {wd:.6g}, lr_biases {lr_biases:.6g}, '
        f'weight_decay args {wd/lr:.6g} / {wd/lr_biases:.6g}, '
        f'schedule peak step {int(0.23 * total_train_steps)}', flush=True)

  total_time_seconds = 0.0
  wall_start = time.perf_counter()

  # Initialize the whitening layer using training images
  t0 = time.perf_counter()
  train_images = train_loader.normalize(train_loader.images[:5000])
  init_whitening_conv(model[0], train_images)
  total_time_seconds += time.perf_counter() - t0

  history = []
  if args.time_steps:
    print_columns(['step', 'seconds'], is_head=True)
  else:
    print_columns(logging_columns_list, is_head=True)

  for epoch in range(ceil(epochs)):

    model[0].bias.requires_grad = (epoch < hyp['opt']['whiten_bias_epochs'])

    ####################
    #     Training     #
    ####################

    t0 = time.perf_counter()

    model.train()
    for inputs, labels in train_loader:
      ts = time.perf_counter()
      outputs = model(inputs)
      loss = loss_fn(outputs, labels).sum()
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      optimizer.step()
      scheduler.step()

      current_steps += 1

      if epoch >= hyp['opt']['ema']['start_epochs'] and current_steps % hyp['opt']['ema']['every_n_steps'] == 0:
        if lookahead_state is None:
          lookahead_state = LookaheadState(model)
        else:
          # We warm up our ema's decay/momentum value over training (this lets us move fast, then average strongly at the end).
          base_rho = hyp['opt']['ema']['decay_base'] ** hyp['opt']['ema']['every_n_steps']
          rho = base_rho * (current_steps / total_train_steps) ** hyp['opt']['ema']['decay_pow']
          lookahead_state.update(model, decay=rho)

      if args.time_steps:
        print_columns([str(current_steps).rjust(4), '%.3f' % (time.perf_counter() - ts)])
        if current_steps >= args.time_steps:
          steps_s = (time.perf_counter() - t0) / current_steps
          print(f'mean {steps_s:.3f} s/step over {current_steps} steps (incl. the epoch-0 '
                f'loader work); {total_train_steps} steps -> about '
                f'{steps_s * total_train_steps / 60:.1f} min of training', flush=True)
          return

      if current_steps >= total_train_steps:
        break

    if lookahead_state is not None:
      # Copy back parameters a final time after each epoch
      lookahead_state.update(model, decay=1.0)

    epoch_seconds = time.perf_counter() - t0
    total_time_seconds += epoch_seconds

    ####################
    #    Evaluation    #
    ####################

    # Save the accuracy and loss from the last training batch of the epoch
    train_acc = (outputs.detach().argmax(1) == labels).float().mean().item()
    train_loss = loss.item() / batch_size

    model.eval()
    with torch.no_grad():
      loss_sum, correct, count = 0.0, 0, 0
      for inputs, labels in test_loader:
        outputs = model(inputs)
        loss_sum += loss_fn(outputs, labels).float().sum().item()
        correct += (outputs.argmax(1) == labels).sum().item()
        count += len(labels)
      val_acc = correct / count
      val_loss = loss_sum / count
    tta_val_acc = None

    print_training_details(locals(), is_final_entry=False)
    history.append(dict(epoch=epoch + 1, steps=current_steps, train_loss=train_loss,
                        train_acc=train_acc, val_loss=val_loss, val_acc=val_acc,
                        epoch_seconds=epoch_seconds))
    run = None  # Only print the run number once

  ####################
  #  TTA Evaluation  #
  ####################

  t0 = time.perf_counter()

  with torch.no_grad():

    # Test-time augmentation strategy (for tta_level=2):
    # 1. Flip/mirror the image left-to-right (50% of the time).
    # 2. Translate the image by one pixel either up-and-left or down-and-right (50% of the time,
    #    i.e. both happen 25% of the time).
    #
    # This creates 6 views per image (left/right times the two translations and no-translation),
    # which we evaluate and then weight according to the given probabilities.

    test_images = test_loader.normalize(test_loader.images)
    test_labels = test_loader.labels

    def infer_basic(inputs, net):
      return net(inputs).clone()

    def infer_mirror(inputs, net):
      return 0.5 * net(inputs) + 0.5 * net(inputs.flip(-1))

    def infer_mirror_translate(inputs, net):
      logits = infer_mirror(inputs, net)
      pad = 1
      padded_inputs = F.pad(inputs, (pad,)*4, 'reflect')
      inputs_translate_list = [
          padded_inputs[:, :, 0:32, 0:32],
          padded_inputs[:, :, 2:34, 2:34],
      ]
      logits_translate_list = [infer_mirror(inputs_translate, net) for inputs_translate in inputs_translate_list]
      logits_translate = torch.stack(logits_translate_list).mean(0)
      return 0.5 * logits + 0.5 * logits_translate

    if hyp['net']['tta_level'] == 0:
      infer_fn = infer_basic
    elif hyp['net']['tta_level'] == 1:
      infer_fn = infer_mirror
    elif hyp['net']['tta_level'] == 2:
      infer_fn = infer_mirror_translate

    model.eval()
    logits_tta = torch.cat([infer_fn(inputs.contiguous(memory_format=memory_format), model)
                            for inputs in test_images.split(2000)])
    tta_val_acc = (logits_tta.argmax(1) == test_labels).float().mean().item()
    # The last epoch's network without TTA, from the same pass's inputs.
    final_val_acc = history[-1]['val_acc']

  total_time_seconds += time.perf_counter() - t0
  wall_seconds = time.perf_counter() - wall_start

  epoch = 'eval'
  print_training_details(locals(), is_final_entry=True)
  print(f'final validation accuracy: {final_val_acc:.4f} without TTA, {tta_val_acc:.4f} with TTA '
        f'(level {hyp["net"]["tta_level"]}); training+TTA time {total_time_seconds:.1f} s, '
        f'wall {wall_seconds:.1f} s', flush=True)

  if args.json:
    result = dict(
        what='airbench94 (KellerJordan/cifar10-airbench airbench94.py) ported to CPU PyTorch '
             'float32, on imgclf_jax\'s CIFAR-10 JPEG q75 split',
        data=args.data, train_examples=int(len(train_x)), val_examples=int(len(val_x)),
        seed=args.seed, threads=torch.get_num_threads(), channels_last=args.channels_last,
        torch=torch.__version__, hyp=hyp, total_train_steps=total_train_steps,
        steps_per_epoch=len(train_loader), history=history,
        final_val_acc=final_val_acc, tta_val_acc=tta_val_acc,
        train_and_tta_seconds=total_time_seconds, wall_seconds=wall_seconds,
        command=' '.join(sys.argv))
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=1)
    print('wrote', args.json)


if __name__ == '__main__':
  main()
