"""The name maps against the code of each source, without torch: reduced
networks of efficientnet-lite-pytorch, torchvision and timm, their weights
and their logits for fixed images written by
benchmarks/make_pretrained_fixtures.py (with torch), are loaded through our
importer into our networks of the same shape, whose logits must be theirs
within 1e-4 (the full-size networks: tests/test_benchmarks.py, with
torch)."""

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from benchmarks import make_pretrained_fixtures as fixtures
from imgclf_jax.models.pretrained import importer
from imgclf_jax.models.pretrained import source


def _load(name):
  """(our network of fixture `name`, the variables our importer reads from
  its file, the stored images and logits, the file's tensors)."""
  weights, expected = fixtures.paths(name)
  model, name_map = fixtures.ours(name)
  stored = load_file(expected)
  target = jax.eval_shape(lambda: model.init(
      jax.random.key(0), stored['images'], train=False))
  tensors = source.read_tensors(source.Source(
      weights, source.SAFETENSORS, name_map.source, 'torch'))
  variables, loaded, new = importer.load_tensors(target, tensors, name_map,
                                                 weights, name)
  # Every tensor of the file (less PyTorch's counters) is used, none is new.
  assert new == [] and loaded == len(tensors) == len(jax.tree.leaves(target))
  return model, variables, stored


@pytest.mark.parametrize('name', fixtures.FIXTURES)
def test_our_logits_are_the_sources_on_its_weights(name):
  model, variables, stored = _load(name)
  logits = model.apply(variables, stored['images'], train=False)
  # 1e-4 is small against these logits and their differences.
  assert np.ptp(stored['logits']) > 0.3
  np.testing.assert_allclose(logits, stored['logits'], rtol=0, atol=1e-4)


@pytest.mark.parametrize('name', [n for n in fixtures.FIXTURES
                                  if 'resnet' in n])
def test_the_resnets_need_pytorchs_padding(name):
  """The check above sees the padding: with Flax's 'SAME' (which pads a
  stride-2 convolution and max pool (0, 1) where PyTorch pads (1, 1)) the
  same weights give other logits."""
  model, variables, stored = _load(name)
  logits = model.clone(padding='flax').apply(variables, stored['images'],
                                             train=False)
  assert np.abs(logits - stored['logits']).max() > 1e-2
