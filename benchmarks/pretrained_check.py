"""Which pixel scaling the shared EfficientNet-Lite0 weights expect, measured
on real images through our port (efficientnet_lite0, the weights loaded by
--config.init_from's importer).

    python -m benchmarks.pretrained_check [--per-class 20] [--reference]

The first `--per-class` CIFAR-10 training JPEGs (by file name) of each
vehicle class in ../shared/datasets/cifar10-jpeg/train, upscaled to 224x224
(PIL, bicubic), are classified with two scalings of their pixels x (0..255):

  tf        (x - 127) / 128, [-1, 1] (the TensorFlow originals')
  imagenet  (x / 255 - mean) / std, ImageNet's mean and std per channel

An image matches where its top 5 ImageNet classes hold one of PLAUSIBLE's
for its CIFAR-10 class. Prints one JSON line per scaling: the match rate of
each class and of all, and per class the ImageNet classes most often ranked
first (with their counts). With --reference (torch and
efficientnet-lite-pytorch installed) also the reference implementation's
match rates on the same inputs and the largest |logit difference| to ours.

ImageNet's class names, imagenet_classes.txt (one per line, in class index
order), are torchvision 0.29.1's torchvision.models._meta._IMAGENET_CATEGORIES
(BSD-3-Clause).
"""

import argparse
import collections
import json
import os
import sys

import numpy as np
from PIL import Image

if __package__ in (None, ''):  # python benchmarks/pretrained_check.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(ROOT, '..', 'shared')
WEIGHTS = os.path.join(SHARED, 'pretrained', 'efficientnet_lite0.safetensors')
CIFAR = os.path.join(SHARED, 'datasets', 'cifar10-jpeg', 'train')
IMAGE_SIZE = 224

SCALINGS = {
    'tf': lambda x: (x - 127.0) / 128.0,
    'imagenet': lambda x: (x / 255.0 - np.array([0.485, 0.456, 0.406])) /
                          np.array([0.229, 0.224, 0.225]),
}

# CIFAR-10 class -> the ImageNet classes (indices into imagenet_classes.txt)
# that count as a plausible answer for it.
PLAUSIBLE = {
    # airliner, airship, space shuttle, warplane, wing
    'airplane': (404, 405, 812, 895, 908),
    # ambulance, beach wagon, cab, car mirror, car wheel, convertible,
    # go-kart, grille, jeep, limousine, minivan, Model T, pickup, police
    # van, racer, sports car
    'automobile': (407, 436, 468, 475, 479, 511, 573, 581, 609, 627, 656,
                   661, 717, 734, 751, 817),
    # aircraft carrier, canoe, catamaran, container ship, fireboat,
    # gondola, lifeboat, liner, paddlewheel, pirate, schooner, speedboat,
    # submarine, trimaran, wreck, yawl
    'ship': (403, 472, 484, 510, 554, 576, 625, 628, 694, 724, 780, 814,
             833, 871, 913, 914),
    # ambulance, fire engine, forklift, garbage truck, half track, jeep,
    # minivan, moving van, pickup, police van, recreational vehicle,
    # snowplow, tow truck, tractor, trailer truck
    'truck': (407, 555, 561, 569, 586, 609, 656, 675, 717, 734, 757, 803,
              864, 866, 867),
}


def class_names() -> list[str]:
  with open(os.path.join(HERE, 'imagenet_classes.txt')) as f:
    names = f.read().splitlines()
  assert len(names) == 1000
  return names


def load_images(per_class: int) -> dict:
  """CIFAR-10 class -> uint8 [n, 224, 224, 3]: its first `per_class`
  JPEGs, upscaled (bicubic)."""
  images = {}
  for cls in PLAUSIBLE:
    files = sorted(os.listdir(os.path.join(CIFAR, cls)))[:per_class]
    images[cls] = np.stack([np.asarray(Image.open(
        os.path.join(CIFAR, cls, f)).convert('RGB').resize(
            (IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)) for f in files])
  return images


def our_logits_fn():
  """Our efficientnet_lite0 with the shared weights: images -> logits."""
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import pretrained_reference  # pylint: disable=g-import-not-at-top
  network, variables = pretrained_reference.ours('efficientnet_lite0',
                                                 WEIGHTS)
  apply = jax.jit(lambda x: network.apply(variables, x, train=False))
  return lambda x: np.asarray(apply(x.astype(np.float32)))


def reference_logits_fn():
  """efficientnet-lite-pytorch's network with the shared weights."""
  from benchmarks import pretrained_reference  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_pretrained  # pylint: disable=g-import-not-at-top
  net, _ = pretrained_reference.reference_weights('efficientnet_lite0', '',
                                                  None)
  return lambda x: torch_pretrained.logits(net, x)


def summarise(logits: dict, names: list[str]) -> dict:
  """Match rates and the classes most often ranked first."""
  rates, firsts, matched, total = {}, {}, 0, 0
  for cls, values in logits.items():
    top5 = np.argsort(-values, axis=1)[:, :5]
    hits = [bool(set(row) & set(PLAUSIBLE[cls])) for row in top5]
    rates[cls] = sum(hits) / len(hits)
    matched, total = matched + sum(hits), total + len(hits)
    counts = collections.Counter(names[i] for i in top5[:, 0])
    firsts[cls] = counts.most_common(5)
  return {'match_rate': rates, 'match_rate_all': matched / total,
          'most_often_first': firsts}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--per-class', type=int, default=20)
  parser.add_argument('--reference', action='store_true')
  args = parser.parse_args()
  names = class_names()
  images = load_images(args.per_class)
  ours = our_logits_fn()
  reference = reference_logits_fn() if args.reference else None
  for scaling, scale in SCALINGS.items():
    logits = {cls: ours(scale(x.astype(np.float64)))
              for cls, x in images.items()}
    result = {'scaling': scaling, 'images_per_class': args.per_class,
              **summarise(logits, names)}
    if reference is not None:
      theirs = {cls: reference(scale(x.astype(np.float64)))
                for cls, x in images.items()}
      result['reference_match_rate'] = summarise(theirs, names)['match_rate']
      result['max_abs_logit_diff_to_reference'] = float(max(
          np.abs(logits[c] - theirs[c]).max() for c in logits))
    print(json.dumps(result), flush=True)


if __name__ == '__main__':
  main()
