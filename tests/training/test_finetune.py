"""The fine-tuning recipe (config.probe_epochs, pretrained_lr_scale,
freeze_batch_norm; configs/finetune_folder.py): the linear probe updates
the head alone (BatchNorm statistics only when not frozen), then every
layer; the multiplier scales the pretrained layers' updates; a fine-tune
from a small saved file on a tiny folder lowers the loss and its
checkpoint evaluates, predicts and exports; a fine-tune resumed inside the
probe ends bit-identical to an uninterrupted one; bad values are one
line. The recipe does not depend on the network's size: efficientnet_lite0
is helpers.SMALL_EFFICIENTNET here (the full network's weights and values:
tests/models/)."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file
from safetensors.numpy import save_file

from imgclf_jax.checkpoints import checkpoint_store
from imgclf_jax.config import keys
from imgclf_jax.config import resolve
from imgclf_jax.config import specs
from imgclf_jax.errors import UserError
from imgclf_jax.models import registry
from imgclf_jax.models.pretrained import name_maps
from imgclf_jax.modes import checkpoint_loader
from imgclf_jax.modes import evaluate
from imgclf_jax.modes import export
from imgclf_jax.modes import predict
from imgclf_jax.parallel import device_axis
from imgclf_jax.training import steps
from imgclf_jax.training import train_state as train_state_lib
from tests import helpers
from tests.modes import test_export

MODEL, SIZE, CLASSES = 'efficientnet_lite0', 16, 3
HEAD = registry.HEADS[MODEL]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


@pytest.fixture(autouse=True)
def _small_efficientnet(monkeypatch):
  helpers.small_efficientnet(monkeypatch)


def _config(**overrides):
  config = keys.get_config()
  config.model, config.dropout_rate, config.image_size = MODEL, 0.0, SIZE
  config.optimizer, config.momentum, config.learning_rate = 'sgd', 0.9, 0.1
  for key, value in overrides.items():
    config[key] = value
  return config


def _state(steps_per_epoch=2, **overrides):
  config = _config(**overrides)
  model = registry.create_model(specs.model_spec(config, CLASSES))
  return train_state_lib.create_train_state(
      jax.random.key(0), model, (SIZE, SIZE, 3), specs.optim_spec(config),
      steps_per_epoch, head=HEAD)


def _batch(seed=0, n=8):
  rng = np.random.default_rng(seed)
  return device_axis.shard(
      {'image': rng.normal(size=(n, SIZE, SIZE, 3)).astype(np.float32),
       'label': np.eye(CLASSES, dtype=np.float32)[rng.integers(0, CLASSES, n)]},
      1)


def _flat(tree):
  return {'/'.join(k): np.asarray(v) for k, v in
          name_maps.flatten(jax.device_get(tree)).items()}


def _changed(before, after):
  a, b = _flat(before), _flat(after)
  return {k for k in a if not np.array_equal(a[k], b[k])}


@pytest.mark.parametrize('freeze', [False, True])
def test_the_probe_trains_the_head_alone_then_every_layer(freeze):
  state = _state(probe_epochs=1.0, freeze_batch_norm=freeze)
  step = helpers.p_train_step(devices=jax.devices()[:1])
  params = _flat(state.params)
  head = {k for k in params if k.startswith(HEAD + '/')}
  assert head and len(head) < len(params)
  first, _ = step(state, _batch(0), jax.random.key(1))
  second, _ = step(first, _batch(1), jax.random.key(1))  # probe: 2 steps
  assert _changed(state.params, second.params) == head
  stats = _changed(state.batch_stats, second.batch_stats)
  assert stats == (set() if freeze else set(_flat(state.batch_stats)))
  third, _ = step(second, _batch(2), jax.random.key(1))
  after = _changed(second.params, third.params)
  # Every layer trains (a few random-weight units saturate ReLU6 under
  # frozen statistics: their gradients are 0).
  assert head <= after and len(after) >= 0.95 * len(params), (
      sorted(set(params) - after))
  # The optimizer state keeps its shape across the switch.
  assert (jax.tree.structure(third.opt_state) ==
          jax.tree.structure(state.opt_state))


def test_the_multiplier_scales_the_pretrained_layers_updates():
  state = _state()
  grads = jax.jit(jax.grad(lambda p: jnp.sum(state.apply_fn(
      {'params': p, 'batch_stats': state.batch_stats},
      np.asarray(_batch()['image'][0]), train=False) ** 2)))(state.params)
  def updates(scale):
    spec = specs.optim_spec(_config(pretrained_lr_scale=scale))
    tx = train_state_lib.create_optimizer(spec, 2, head=HEAD)
    return _flat(tx.update(grads, tx.init(state.params), state.params)[0])
  plain, scaled = updates(1.0), updates(0.25)
  for key in plain:
    want = plain[key] if key.startswith(HEAD + '/') else plain[key] * 0.25
    np.testing.assert_array_equal(scaled[key], want, err_msg=key)
    assert np.any(plain[key] != 0), key


@pytest.mark.slow
def test_the_multiplier_in_a_train_step():
  step = helpers.p_train_step(devices=jax.devices()[:1])
  start = _flat(_state().params)
  deltas = []
  for scale in (1.0, 0.5):
    new, _ = step(_state(pretrained_lr_scale=scale), _batch(),
                  jax.random.key(1))
    deltas.append({k: v - start[k] for k, v in _flat(new.params).items()})
  for key, plain in deltas[0].items():
    factor = 1.0 if key.startswith(HEAD + '/') else 0.5
    np.testing.assert_allclose(deltas[1][key], plain * factor, rtol=1e-4,
                               atol=2e-7, err_msg=key)


@pytest.mark.parametrize('overrides, message', [
    ({'probe_epochs': -1.0}, '--config.probe_epochs=-1.0 is invalid'),
    ({'pretrained_lr_scale': 0.0},
     '--config.pretrained_lr_scale=0.0 is invalid: it must be in (0, 1]'),
    ({'pretrained_lr_scale': 2.0},
     '--config.pretrained_lr_scale=2.0 is invalid: it must be in (0, 1]'),
    ({'model': 'cnn', 'freeze_batch_norm': True, 'dropout_rate': 0.5},
     '--config.freeze_batch_norm=True is invalid: it must be False for '
     '--config.model=cnn'),
    ({'init_from': '', 'probe_epochs': 2.0},
     '--config.probe_epochs=2.0 is invalid: it must be 0.0 without '
     '--config.init_from'),
])
def test_bad_values_are_one_line(overrides, message):
  config = _config(**{'dataset': 'cifar10', 'init_from': 'w.safetensors',
                      **overrides})
  with pytest.raises(UserError) as e:
    resolve.validate(config, 1)
  assert str(e.value).startswith(message) and '\n' not in str(e.value)


def _weights_file(path, seed=1):
  """efficientnet_lite0's random weights (10 classes) as a .safetensors file
  under efficientnet-lite-pytorch's names."""
  config = _config()
  shapes = jax.eval_shape(lambda: registry.create_model(
      specs.model_spec(config, 10)).init(
          jax.random.key(0), np.zeros((1, SIZE, SIZE, 3)), train=False))
  rng = np.random.default_rng(seed)
  weights = jax.tree.map(
      lambda s: rng.normal(scale=0.1, size=s.shape).astype(np.float32), shapes)
  weights['batch_stats'] = jax.tree.map(lambda v: 1 + np.abs(v),
                                        weights['batch_stats'])
  save_file(name_maps.to_state_dict(weights, name_maps.MAPS[MODEL]),
            str(path))
  return str(path)


def _finetune_config(folder, weights, **overrides):
  """configs/finetune_folder.py on `folder`, shrunk to run in seconds."""
  spec = importlib.util.spec_from_file_location(
      'finetune_folder', os.path.join(ROOT, 'configs', 'finetune_folder.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.dataset = f'folder:{folder}'
  config.init_from = weights
  config.image_size = SIZE
  config.batch_size = 8
  config.eval_batch_size = 8
  config.shuffle_buffer_size = 64
  config.log_every_steps = 2
  config.num_epochs = 3
  config.probe_epochs = 1.0
  for key, value in overrides.items():
    config[key] = value
  return config


@pytest.fixture(scope='module')
def finetune_folder(tmp_path_factory):
  return helpers.make_image_folder(tmp_path_factory.mktemp('photos'),
                                   per_class=(16, 16, 16))


@pytest.mark.slow
def test_a_finetune_lowers_the_loss_and_its_checkpoint_serves(
    finetune_folder, tmp_path):
  weights = _weights_file(tmp_path / 'w.safetensors')
  workdir = str(tmp_path / 'run')
  config = _finetune_config(finetune_folder, weights, num_epochs=4,
                            augment='')
  helpers.train_in(config, workdir)
  losses = [r['train_loss'] for r in helpers.records(workdir)]
  assert losses[-1] < losses[0], losses
  # The checkpoint carries the weights' normalisation, not the folder's.
  store = checkpoint_store.CheckpointStore(workdir)
  _, metadata = store.restore_metadata()
  store.close()
  np.testing.assert_allclose(metadata['normalization']['mean'], [0.498] * 3)
  np.testing.assert_allclose(metadata['normalization']['std'], [0.502] * 3)
  assert metadata['config']['freeze_batch_norm'] is True
  # Frozen BatchNorm: the statistics are still the file's.
  restored = checkpoint_loader.load(workdir)
  np.testing.assert_array_equal(
      restored.state.batch_stats['stem_bn']['var'],
      _file_stat(weights, '_bn0.running_var'))
  result = evaluate.evaluate_checkpoint(None, workdir)
  assert result['num_examples'] > 0
  # predict and the export apply the weights' normalisation.
  config.top_k = CLASSES
  folder = os.path.join(finetune_folder, 'train', 'class_1')
  predicted = predict.predict_images(config, workdir, folder)['predictions']
  files = [row['file'] for row in predicted]
  names = restored.class_names
  got = np.array([[dict(row['top_k'])[c] for c in names] for row in predicted])
  images = np.stack([predict.load_image(f, SIZE, 3) for f in files])
  pixels = (images.astype(np.float32) / 255 - 0.498) / 0.502
  want = jax.nn.softmax(restored.state.apply_fn(
      steps.inference_variables(restored.state), pixels, train=False))
  np.testing.assert_allclose(got, want, atol=1e-5)
  exported = export.export_checkpoint(None, workdir)
  served = test_export._serve(exported['path'], images, images, tmp_path)
  np.testing.assert_allclose(served['uint8'], got, atol=1e-5)


def _file_stat(weights, key):
  return load_file(weights)[key]


@pytest.mark.slow
def test_a_finetune_resumed_inside_the_probe_ends_as_an_uninterrupted_one(
    finetune_folder, tmp_path):
  weights = _weights_file(tmp_path / 'w.safetensors')
  full = str(tmp_path / 'full')
  # A constant learning rate: the cosine's shape depends on num_epochs,
  # which the interrupted run sets to 1.
  config = _finetune_config(finetune_folder, weights, probe_epochs=2.0,
                            freeze_batch_norm=False, lr_schedule='constant')
  helpers.train_in(config, full)
  parted = str(tmp_path / 'parted')
  helpers.train_in(_finetune_config(finetune_folder, weights, num_epochs=1,
                                    probe_epochs=2.0,
                                    freeze_batch_norm=False,
                                    lr_schedule='constant'), parted)
  helpers.train_in(config, parted)
  a = checkpoint_loader.load(full).state
  b = checkpoint_loader.load(parted).state
  assert int(a.step) == int(b.step) > 0
  for tree in ('params', 'batch_stats', 'opt_state'):
    for x, y in zip(jax.tree.leaves(getattr(a, tree)),
                    jax.tree.leaves(getattr(b, tree))):
      np.testing.assert_array_equal(x, y, err_msg=tree)
