"""PyTorch peers of the networks benchmarks/run.py measures, and their
training recipes.

Needs torch (an optional dependency of the benchmarks: import this module
only where `import torch` works). The seed CNN's peer stays in run.py
(`torch_setup`); this module has fast_cifar's:

  * FastCifar: imgclf_jax/models/fast_cifar.py's airbench94 network in PyTorch, the
    layers airbench itself uses (Conv2d, MaxPool2d, BatchNorm2d, GELU,
    Linear), in NCHW;
  * load_flax / to_flax: our Flax parameters and BatchNorm statistics into
    the peer (kernels HWIO -> OIHW, Dense [in, out] -> Linear [out, in]) and
    back, so both sides can start from the same weights and be compared;
  * Recipe / train_step: the trainer's fast_cifar step (train_state.py's
    optimizer, steps.train_step's loss and EMA) in PyTorch eager.
"""

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# --- the network ----------------------------------------------------------------


def _batch_norm(width: int, momentum: float) -> nn.BatchNorm2d:
  """Flax's nn.BatchNorm(momentum, epsilon=1e-12, use_scale=False) as
  airbench writes it: PyTorch's momentum is 1 - Flax's, and the scale is a
  constant 1 (a weight that is not trained: ours has no scale)."""
  norm = nn.BatchNorm2d(width, eps=1e-12, momentum=1.0 - momentum)
  norm.weight.requires_grad_(False)
  return norm


class ConvGroup(nn.Module):
  """conv3x3 - maxpool 2 - BN - GELU - conv3x3 - BN - GELU (no conv bias)."""

  def __init__(self, in_width: int, width: int, bn_momentum: float):
    super().__init__()
    self.conv0 = nn.Conv2d(in_width, width, 3, padding=1, bias=False)
    self.pool = nn.MaxPool2d(2)
    self.norm0 = _batch_norm(width, bn_momentum)
    self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
    self.norm1 = _batch_norm(width, bn_momentum)

  def forward(self, x):
    x = F.gelu(self.norm0(self.pool(self.conv0(x))))
    return F.gelu(self.norm1(self.conv1(x)))


class FastCifar(nn.Module):
  """imgclf_jax.models.fast_cifar.FastCifar: the whitening conv 2x2 (no padding,
  bias; its weight frozen) - GELU, the conv groups, a global max pool
  (MaxPool2d(3): the groups leave 3x3 of a 32x32 image), Linear without bias,
  times 1/9. Images [N, C, H, W] -> logits [N, num_classes]."""

  def __init__(self, num_classes: int = 10, widths=(64, 256, 256),
               whiten_kernel_size: int = 2, bn_momentum: float = 0.6,
               logit_scale: float = 1 / 9, in_channels: int = 3):
    super().__init__()
    k = whiten_kernel_size
    width = 2 * in_channels * k * k
    self.whiten = nn.Conv2d(in_channels, width, k, padding=0, bias=True)
    self.whiten.weight.requires_grad_(False)
    groups = []
    for w in widths:
      groups.append(ConvGroup(width, w, bn_momentum))
      width = w
    self.groups = nn.Sequential(*groups)
    self.pool = nn.MaxPool2d(3)
    self.head = nn.Linear(width, num_classes, bias=False)
    self.logit_scale = logit_scale

  def forward(self, x):
    x = self.groups(F.gelu(self.whiten(x)))
    return self.head(self.pool(x).flatten(1)) * self.logit_scale

  def norms(self) -> list:
    return [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)]


def ours_parameters(model: nn.Module) -> list:
  """The parameters that ours has too: all but BatchNorm's constant scale."""
  scales = {id(m.weight) for m in model.modules()
            if isinstance(m, nn.BatchNorm2d)}
  return [p for p in model.parameters() if id(p) not in scales]


def num_params(model: nn.Module) -> int:
  """The parameters counted as models.num_params counts ours (BatchNorm's
  constant scale left out: ours has none)."""
  return sum(p.numel() for p in ours_parameters(model))


# --- weights from and to Flax -----------------------------------------------------


def _flax_layers(model: FastCifar):
  """(Flax path, module) for every layer with weights."""
  yield ('Whiten',), model.whiten
  for i, group in enumerate(model.groups):
    g = f'ConvGroup_{i}'
    yield (g, 'Conv_0'), group.conv0
    yield (g, 'BatchNorm_0'), group.norm0
    yield (g, 'Conv_1'), group.conv1
    yield (g, 'BatchNorm_1'), group.norm1
  yield ('Dense_0',), model.head


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


@torch.no_grad()
def load_flax(model: FastCifar, params, batch_stats=None) -> FastCifar:
  """`model` with our `params` (and BatchNorm `batch_stats`) copied in."""
  def tensor(a, like):
    return torch.from_numpy(np.array(a, np.float32)).to(like.device)

  for path, layer in _flax_layers(model):
    p = _get(params, path)
    if isinstance(layer, nn.Conv2d):       # HWIO -> OIHW
      layer.weight.copy_(tensor(p['kernel'], layer.weight).permute(3, 2, 0, 1))
      if layer.bias is not None:
        layer.bias.copy_(tensor(p['bias'], layer.bias))
    elif isinstance(layer, nn.Linear):     # [in, out] -> [out, in]
      layer.weight.copy_(tensor(p['kernel'], layer.weight).T)
    else:
      layer.weight.fill_(1.0)
      layer.bias.copy_(tensor(p['bias'], layer.bias))
      if batch_stats is not None:
        s = _get(batch_stats, path)
        layer.running_mean.copy_(tensor(s['mean'], layer.running_mean))
        layer.running_var.copy_(tensor(s['var'], layer.running_var))
  return model


@torch.no_grad()
def to_flax(model: FastCifar, tensors=None):
  """(params, batch_stats) of `model` as nested dicts of NumPy arrays in our
  layout. `tensors`: other values in the place of ours_parameters(model) +
  the BatchNorm running statistics, in train_step's `ema` order."""
  values = None if tensors is None else iter(tensors)
  order = ema_order(model)
  lookup = ({id(t): v for t, v in zip(order, values)} if values is not None
            else {id(t): t for t in order})

  def arr(t):
    return lookup[id(t)].detach().float().cpu().numpy()

  params, stats = {}, {}
  for path, layer in _flax_layers(model):
    node = params
    for key in path:
      node = node.setdefault(key, {})
    if isinstance(layer, nn.Conv2d):
      node['kernel'] = arr(layer.weight).transpose(2, 3, 1, 0)
      if layer.bias is not None:
        node['bias'] = arr(layer.bias)
    elif isinstance(layer, nn.Linear):
      node['kernel'] = arr(layer.weight).T
    else:
      node['bias'] = arr(layer.bias)
      s = stats
      for key in path:
        s = s.setdefault(key, {})
      s['mean'] = arr(layer.running_mean)
      s['var'] = arr(layer.running_var)
  return params, stats


# --- the recipe ---------------------------------------------------------------------


@dataclasses.dataclass
class Recipe:
  """The numbers of the trainer's fast_cifar step (train_state.py,
  steps.train_step), for PyTorch."""
  learning_rates: np.ndarray    # the schedule, per step (its last to the end)
  momentum: float
  nesterov: bool
  weight_decay: float           # decoupled: p -= lr * weight_decay * p
  norm_bias_lr_scale: float     # BatchNorm biases' steps (not their decay)
  label_smoothing: float
  ema_decay: float              # 0: no EMA
  whiten_bias_steps: int        # the whitening bias trains for this many steps

  def lr(self, step: int) -> float:
    return float(self.learning_rates[min(step, len(self.learning_rates) - 1)])

  def ema_decay_at(self, step: int) -> float:
    """steps.ema_decay_at."""
    return min(self.ema_decay, (1.0 + step) / (10.0 + step))


def recipe(config, steps_per_epoch: int) -> Recipe:
  """The Recipe of a resolved training `config` (optimizer 'sgd')."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from imgclf_jax.config import specs  # pylint: disable=import-outside-toplevel
  from imgclf_jax.training import train_state  # pylint: disable=import-outside-toplevel
  if config.optimizer != 'sgd':
    raise ValueError(f'the PyTorch fast_cifar peer has SGD only, not '
                     f'optimizer={config.optimizer!r}')
  schedule = train_state.learning_rate_schedule(specs.optim_spec(config),
                                                steps_per_epoch)
  total = int(config.num_epochs * steps_per_epoch)
  return Recipe(
      learning_rates=np.asarray(schedule(jnp.arange(total + 1)), np.float64),
      momentum=float(config.momentum), nesterov=bool(config.nesterov),
      weight_decay=float(config.weight_decay),
      norm_bias_lr_scale=float(config.norm_bias_lr_scale),
      label_smoothing=float(config.label_smoothing),
      ema_decay=float(config.ema_decay),
      whiten_bias_steps=int(round(config.whiten_bias_epochs *
                                  steps_per_epoch)))


def ema_order(model: FastCifar) -> list:
  """What the EMA averages, in order: ours_parameters(model), then every
  BatchNorm's running mean and variance (ours: params and batch_stats)."""
  stats = [t for m in model.norms() for t in (m.running_mean, m.running_var)]
  return ours_parameters(model) + stats


def train_step(model: FastCifar, images, labels, r: Recipe, device='cpu',
               half=False, forward=None):
  """One training step of `model` on (images [N, C, H, W], labels [N]) per
  call, returning the loss (a tensor):

    * loss: cross-entropy with label smoothing, the mean over the batch;
    * torch.optim.SGD(momentum, nesterov) without weight decay, the
      BatchNorm biases in a param group with norm_bias_lr_scale x the step
      size, the learning rate of the schedule at this step;
    * decoupled weight decay, as ours (optax.add_decayed_weights after the
      momentum, before the learning rate: p <- p - lr (m + wd p)): the
      parameters that train are multiplied by 1 - lr wd before
      optimizer.step(), which then subtracts lr m (its weight_decay=0);
    * the whitening weight and BatchNorm scales are never trained
      (requires_grad False: no gradient, no decay); the whitening bias stops
      after r.whiten_bias_steps steps;
    * the EMA (r.ema_decay > 0) of the new parameters and BatchNorm running
      statistics, torch._foreach_lerp_ with steps.ema_decay_at's weight.

  `forward`: what computes the logits (default `model`; a torch.compile'd
  model for the 'compile' peer). The returned function has `.model`, `.ema`
  (the averaged tensors, in ema_order) and `.optimizer`.
  """
  forward = model if forward is None else forward
  norm_biases = [m.bias for m in model.norms()]
  biases = {id(p) for p in norm_biases}
  others = [p for p in model.parameters()
            if p.requires_grad and id(p) not in biases]
  optimizer = torch.optim.SGD(
      [{'params': others, 'lr_scale': 1.0},
       {'params': norm_biases, 'lr_scale': r.norm_bias_lr_scale}],
      lr=r.lr(0), momentum=r.momentum, nesterov=r.nesterov, weight_decay=0.0)
  decayed = [p for p in model.parameters() if p.requires_grad]
  live = ema_order(model)
  ema = [t.detach().clone() for t in live] if r.ema_decay > 0 else None
  loss_fn = nn.CrossEntropyLoss(label_smoothing=r.label_smoothing)
  count = [0]

  def step():
    nonlocal decayed
    s = count[0]
    bias = model.whiten.bias
    if s >= r.whiten_bias_steps and bias.requires_grad:
      bias.requires_grad_(False)
      bias.grad = None
      decayed = [p for p in decayed if p is not bias]
    lr = r.lr(s)
    for group in optimizer.param_groups:
      group['lr'] = lr * group['lr_scale']
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=half):
      loss = loss_fn(forward(images), labels)
    loss.backward()
    with torch.no_grad():
      if r.weight_decay:
        torch._foreach_mul_(decayed, 1.0 - lr * r.weight_decay)  # pylint: disable=protected-access
      optimizer.step()
      if ema is not None:
        torch._foreach_lerp_(ema, live, 1.0 - r.ema_decay_at(s))  # pylint: disable=protected-access
    count[0] += 1
    return loss

  step.model, step.ema, step.optimizer = model, ema, optimizer
  return step
