"""The PyTorch implementations that pretrained weights are made for, as
references for imgclf_jax/models/pretrained/: built at full size or reduced
(benchmarks/make_pretrained_fixtures.py's FIXTURES), with random weights and
BatchNorm statistics measured on a batch (so that random weights keep their
activations, and the logits, in a range where float32 differences of 1e-4
mean something), their state_dicts as numpy, their logits for NHWC images.

Needs torch (import this module only where `import torch` works), and per
network the package that defines it, imported where used:
  * efficientnet-lite-pytorch 0.1.0 (EfficientNet.from_name);
  * torchvision (0.29.1 installs beside torch 2.14.1): models.resnet18/50,
    models.resnet.ResNet with its BasicBlock and Bottleneck;
  * timm: create_model('resnet18'/'resnet50'), timm.models.resnet.ResNet.
"""

import numpy as np
import torch


def efficientnet_lite(num_classes: int = 1000, image_size: int = 224,
                      **overrides):
  """efficientnet-lite-pytorch's EfficientNet-Lite0 (`overrides`: its
  GlobalParams, e.g. a reduced width), static padding for `image_size`."""
  from efficientnet_lite_pytorch import EfficientNet  # pylint: disable=g-import-not-at-top
  return EfficientNet.from_name('efficientnet-lite0', num_classes=num_classes,
                                image_size=image_size, **overrides)


def torchvision_resnet(name: str, num_classes: int = 1000):
  """torchvision.models.resnet18 / resnet50, random weights."""
  import torchvision  # pylint: disable=g-import-not-at-top
  return getattr(torchvision.models, name)(num_classes=num_classes)


def timm_resnet(name: str, num_classes: int = 1000):
  """timm.create_model('resnet18' / 'resnet50'), random weights."""
  import timm  # pylint: disable=g-import-not-at-top
  return timm.create_model(name, pretrained=False, num_classes=num_classes)


def tiny_torchvision_resnet(block: str, channels, num_classes: int):
  """torchvision's ResNet class with one `block` ('basic' or 'bottleneck')
  per stage and `channels` filters (torchvision fixes 64-128-256-512: the
  stem and stages are rebuilt by its own _make_layer)."""
  from torchvision.models import resnet  # pylint: disable=g-import-not-at-top
  block_cls = {'basic': resnet.BasicBlock, 'bottleneck': resnet.Bottleneck}[
      block]
  net = resnet.ResNet(block_cls, [1, 1, 1, 1], num_classes=num_classes)
  net.inplanes = channels[0]
  net.conv1 = torch.nn.Conv2d(3, channels[0], 7, 2, 3, bias=False)
  net.bn1 = torch.nn.BatchNorm2d(channels[0])
  for i, width in enumerate(channels):
    setattr(net, f'layer{i + 1}', net._make_layer(  # pylint: disable=protected-access
        block_cls, width, 1, stride=1 if i == 0 else 2))
  net.fc = torch.nn.Linear(channels[-1] * block_cls.expansion, num_classes)
  return net


def tiny_timm_resnet(block: str, channels, num_classes: int):
  """timm's ResNet class with one `block` per stage and `channels` filters
  (timm's 7x7 stem has 64: the stem and stages are rebuilt, the stages by
  its own make_blocks)."""
  from timm.models import resnet  # pylint: disable=g-import-not-at-top
  block_cls = {'basic': resnet.BasicBlock, 'bottleneck': resnet.Bottleneck}[
      block]
  net = resnet.ResNet(block_cls, [1, 1, 1, 1], channels=tuple(channels),
                      num_classes=num_classes)
  net.conv1 = torch.nn.Conv2d(3, channels[0], 7, 2, 3, bias=False)
  net.bn1 = torch.nn.BatchNorm2d(channels[0])
  stages, _ = resnet.make_blocks((block_cls,) * len(channels),
                                 tuple(channels), (1,) * len(channels),
                                 channels[0])
  for name, stage in stages:
    setattr(net, name, stage)
  return net


def randomize(net, images_nhwc: np.ndarray, seed: int = 0):
  """Random BatchNorm scales and biases, and running statistics measured on
  `images_nhwc` (a training-mode pass with a cumulative average), so that
  the network in eval mode normalises its activations; then eval mode."""
  generator = torch.Generator().manual_seed(seed)
  norms = [m for m in net.modules()
           if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]  # pylint: disable=protected-access
  with torch.no_grad():
    for m in norms:
      m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
      m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
      m.reset_running_stats()
      m.momentum = None  # the average over the passes
    net.train()
    net(_nchw(images_nhwc))
  net.eval()
  return net


def _nchw(images_nhwc) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(
      np.asarray(images_nhwc, np.float32).transpose(0, 3, 1, 2)))


def logits(net, images_nhwc: np.ndarray) -> np.ndarray:
  """The network's logits (eval mode) for NHWC float32 images."""
  net.eval()
  with torch.no_grad():
    return net(_nchw(images_nhwc)).numpy()


def state_dict(net) -> dict:
  """The network's state_dict as numpy arrays (BatchNorm counters too)."""
  return {k: np.ascontiguousarray(v.detach().cpu().numpy())
          for k, v in net.state_dict().items()}
