"""Our full-size networks against the PyTorch implementations their
pretrained weights are made for: the same weights, loaded through
--config.init_from's importer (imgclf_jax/models/pretrained/), and the same
images give the same logits.

    python -m benchmarks.pretrained_reference [--images N]

prints one JSON line per reference whose packages import here (the others
are named as skipped):

  efficientnet_lite0    efficientnet-lite-pytorch 0.1.0 with the ImageNet
                        weights of ../shared/pretrained/efficientnet_lite0.safetensors
  torchvision_resnet18  torchvision's resnet18 / resnet50, random weights
  torchvision_resnet50  (BatchNorm statistics measured on a batch) saved
  timm_resnet18         with safetensors; timm's likewise
  timm_resnet50

Images: N (default 2) 224x224 images of normal noise (seed 0). Needs torch
(and torchvision, timm or efficientnet-lite-pytorch for each reference);
tests/test_benchmarks.py runs it where they import.
"""

import argparse
import json
import os
import sys
import tempfile

import numpy as np

if __package__ in (None, ''):  # python benchmarks/pretrained_reference.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_WEIGHTS = os.path.join(ROOT, '..', 'shared', 'pretrained',
                              'efficientnet_lite0.safetensors')
IMAGE_SIZE = 224

# reference -> (our model, the package it needs)
REFERENCES = {
    'efficientnet_lite0': ('efficientnet_lite0', 'efficientnet_lite_pytorch'),
    'torchvision_resnet18': ('resnet18', 'torchvision'),
    'torchvision_resnet50': ('resnet50', 'torchvision'),
    'timm_resnet18': ('resnet18', 'timm'),
    'timm_resnet50': ('resnet50', 'timm'),
}


def images(n: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).normal(
      size=(n, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)


def reference_weights(name: str, folder: str, inputs: np.ndarray):
  """(the torch network of reference `name` in eval mode, the
  .safetensors file of its weights)."""
  import torch  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_pretrained  # pylint: disable=g-import-not-at-top
  if name == 'efficientnet_lite0':
    net = torch_pretrained.efficientnet_lite()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in
                         load_file(SHARED_WEIGHTS).items()}, strict=True)
    return net.eval(), SHARED_WEIGHTS
  source, model = name.split('_')
  build = {'torchvision': torch_pretrained.torchvision_resnet,
           'timm': torch_pretrained.timm_resnet}[source]
  torch.manual_seed(list(REFERENCES).index(name))
  net = torch_pretrained.randomize(build(model), inputs)
  path = os.path.join(folder, f'{name}.safetensors')
  save_file(torch_pretrained.state_dict(net), path)
  return net, path


def ours(model: str, weights: str, num_classes: int = 1000):
  """(our network for `model`, its variables) from `weights` through
  pretrained_init.initialize, as a new training run gets them."""
  import jax  # pylint: disable=g-import-not-at-top
  from imgclf_jax.config import keys  # pylint: disable=g-import-not-at-top
  from imgclf_jax.config import specs  # pylint: disable=g-import-not-at-top
  from imgclf_jax.models import registry  # pylint: disable=g-import-not-at-top
  from imgclf_jax.modes import pretrained_init  # pylint: disable=g-import-not-at-top
  from imgclf_jax.models.pretrained import source  # pylint: disable=g-import-not-at-top
  from imgclf_jax.training import train_state  # pylint: disable=g-import-not-at-top
  config = keys.get_config()
  config.model, config.init_from = model, weights
  config.dropout_rate = 0.2 if model in registry.DROPOUT_MODELS else 0.0
  config.model_layout = source.describe(weights).model_layout
  network = registry.create_model(specs.model_spec(config, num_classes))
  state = jax.jit(lambda rng: train_state.create_train_state(
      rng, network, (IMAGE_SIZE, IMAGE_SIZE, 3), specs.optim_spec(config), 1))(
          jax.random.key(0))
  state, record = pretrained_init.initialize(state, weights, model, num_classes)
  assert not record['left_new'], record
  return network, {'params': state.params, 'batch_stats': state.batch_stats}


def compare(name: str, num_images: int = 2) -> dict:
  """Reference `name`'s logits and ours on `num_images` images."""
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_pretrained  # pylint: disable=g-import-not-at-top
  model = REFERENCES[name][0]
  inputs = images(num_images)
  with tempfile.TemporaryDirectory() as folder:
    net, weights = reference_weights(name, folder, images(16, seed=1))
    want = torch_pretrained.logits(net, inputs)
    network, variables = ours(model, weights)
  got = np.asarray(jax.jit(lambda v, x: network.apply(v, x, train=False))(
      variables, inputs))
  return {'reference': name, 'model': model, 'images': num_images,
          'max_abs_logit_diff': float(np.abs(got - want).max()),
          'max_abs_logit': float(np.abs(want).max()),
          'logit_std': float(want.std()),
          'same_top1': bool((got.argmax(1) == want.argmax(1)).all())}


def available(name: str) -> str | None:
  """None where reference `name` can run here, else why not."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  for package in ('torch', REFERENCES[name][1]):
    if importlib.util.find_spec(package) is None:
      return f'{package} is not installed'
  if name == 'efficientnet_lite0' and not os.path.exists(SHARED_WEIGHTS):
    return f'{SHARED_WEIGHTS} is missing'
  return None


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--images', type=int, default=2)
  args = parser.parse_args()
  for name in REFERENCES:
    missing = available(name)
    print(json.dumps({'reference': name, 'skipped': missing} if missing else
                     compare(name, args.images)), flush=True)


if __name__ == '__main__':
  main()
