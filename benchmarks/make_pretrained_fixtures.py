"""Writes the small fixtures with which CI checks the pretrained-weights name
maps without torch (tests/models/pretrained/test_fixtures.py).

For each source of imgclf_jax/models/pretrained/name_maps.py, a reduced
network of that source's own code (random weights, BatchNorm statistics
measured on a batch: torch_pretrained.randomize) is saved as

  tests/models/pretrained/fixtures/<name>.safetensors           its state_dict
  tests/models/pretrained/fixtures/<name>.expected.safetensors  'images'
      (NHWC, float32) and 'logits': what that code computes for them

and the test loads the first through our importer into our network of the
same shape (`ours`) and compares its logits with the stored ones.

    python -m benchmarks.make_pretrained_fixtures [--out DIR]

needs torch, torchvision, timm and efficientnet-lite-pytorch 0.1.0 together
(e.g. pip install --target /tmp/tv torch==2.14.1 torchvision==0.29.1 timm
efficientnet-lite-pytorch==0.1.0, then PYTHONPATH=/tmp/tv). This module's
specs import without torch.
"""

import argparse
import os
import sys

import numpy as np

if __package__ in (None, ''):  # python benchmarks/make_pretrained_fixtures.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from imgclf_jax.models import efficientnet
from imgclf_jax.models import resnet
from imgclf_jax.models.pretrained import name_maps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.path.join(ROOT, 'tests', 'models', 'pretrained', 'fixtures')

NUM_CLASSES = 5
IMAGE_SIZE = 32  # even: stride-2 'SAME' and PyTorch's padding differ there
NUM_IMAGES = 2

# efficientnet-lite-pytorch's GlobalParams for a reduced Lite0, and the
# stages (repeats, kernel, stride, expand ratio, filters) its rounding gives;
# no stage's first block keeps stride 1 and width, where the package and
# TensorFlow differ (efficientnet.py).
EFFICIENTNET_TINY = dict(width_coefficient=0.1, depth_coefficient=0.5,
                         depth_divisor=2, fix_head_stem=False)
EFFICIENTNET_TINY_STAGES = ((1, 3, 1, 1, 2), (1, 3, 2, 6, 4), (1, 5, 2, 6, 4),
                            (2, 3, 2, 6, 8), (2, 5, 1, 6, 12),
                            (2, 5, 2, 6, 20), (1, 3, 1, 6, 32))
RESNET_CHANNELS = (2, 4, 8, 16)
BLOCKS = {'resnet18': 'basic', 'resnet50': 'bottleneck'}

FIXTURES = ('efficientnet_lite0_tiny', 'torchvision_resnet18_tiny',
            'torchvision_resnet50_tiny', 'timm_resnet18_tiny',
            'timm_resnet50_tiny')


def ours(name: str):
  """(our network of fixture `name`'s shape, its name_maps.NameMap)."""
  if name.startswith('efficientnet_lite0'):
    model = efficientnet.EfficientNetLite(
        num_classes=NUM_CLASSES, stages=EFFICIENTNET_TINY_STAGES,
        stem_filters=4, head_filters=128, bn_axis_name=None)
    return model, name_maps.MAPS['efficientnet_lite0']
  block = BLOCKS[name.split('_')[1]]
  block_cls = (resnet.ResNetBlock if block == 'basic' else
               resnet.BottleneckResNetBlock)
  model = resnet.ResNet(num_classes=NUM_CLASSES, stage_sizes=(1, 1, 1, 1),
                        block_cls=block_cls, stem='imagenet',
                        num_filters=RESNET_CHANNELS[0], padding='torch',
                        bn_axis_name=None)
  return model, name_maps.resnet_map((1, 1, 1, 1))


def reference(name: str):
  """Fixture `name`'s network from its source's own code (needs torch)."""
  from benchmarks import torch_pretrained  # pylint: disable=g-import-not-at-top
  if name.startswith('efficientnet_lite0'):
    return torch_pretrained.efficientnet_lite(
        NUM_CLASSES, IMAGE_SIZE, **EFFICIENTNET_TINY)
  source, model = name.split('_')[:2]
  build = {'torchvision': torch_pretrained.tiny_torchvision_resnet,
           'timm': torch_pretrained.tiny_timm_resnet}[source]
  return build(BLOCKS[model], RESNET_CHANNELS, NUM_CLASSES)


def images(seed: int, n: int = NUM_IMAGES) -> np.ndarray:
  return np.random.default_rng(seed).normal(
      size=(n, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)


def paths(name: str, out: str = FIXTURE_DIR) -> tuple[str, str]:
  """(the weights file, the expected-outputs file) of fixture `name`."""
  return (os.path.join(out, f'{name}.safetensors'),
          os.path.join(out, f'{name}.expected.safetensors'))


def write(name: str, out: str = FIXTURE_DIR):
  """Writes fixture `name`'s two files into `out`."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_pretrained  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(FIXTURES.index(name))
  net = torch_pretrained.randomize(reference(name), images(100, 16))
  inputs = images(0)
  weights, expected = paths(name, out)
  save_file(torch_pretrained.state_dict(net), weights,
            metadata={'fixture': name,
                      'written_by': 'benchmarks/make_pretrained_fixtures.py'})
  save_file({'images': inputs,
             'logits': torch_pretrained.logits(net, inputs)}, expected)
  return weights, expected


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', default=FIXTURE_DIR)
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  for name in FIXTURES:
    weights, _ = write(name, args.out)
    print(f'{name}: {os.path.getsize(weights):,} bytes')


if __name__ == '__main__':
  main()
