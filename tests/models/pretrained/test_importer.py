"""modes/pretrained_init.py, importer.py and source.py: a new training state
from --config.init_from.

Every tensor but the head equals the file's and the head starts new where
the class count differs (with its log line and metadata record); any other
mismatch, a file that is not safetensors, weights of another network or a
folder that is not a workdir is one `error:` line (exit 2 through
dispatch.run); the config's resolution takes the weights' layout; training
records where its weights came from, and a resumed run does not read them
again; a checkpoint of this program is a source too."""

import hashlib
import logging
import os

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from imgclf_jax.config import specs
from imgclf_jax.checkpoints import checkpoint_store
from imgclf_jax.config import keys
from imgclf_jax.config import resolve
from imgclf_jax.errors import UserError
from imgclf_jax.models import registry
from imgclf_jax.modes import pretrained_init
from imgclf_jax.models.pretrained import name_maps
from imgclf_jax.modes import checkpoint_loader
from imgclf_jax.modes import dispatch
from imgclf_jax.modes import evaluate
from imgclf_jax.training import train_state
from tests import helpers

SIZE = 16


def _config(model='resnet18', **overrides):
  config = keys.get_config()
  config.model, config.dropout_rate, config.image_size = model, 0.0, SIZE
  config.model_layout = 'torch' if model in registry.TORCH_LAYOUT else 'flax'
  for key, value in overrides.items():
    config[key] = value
  return config


def _state(num_classes, seed=0, **overrides):
  """A new TrainState, as training creates it."""
  config = _config(**overrides)
  model = registry.create_model(specs.model_spec(config, num_classes))
  return train_state.create_train_state(jax.random.key(seed), model,
                                        (SIZE, SIZE, 3),
                                        specs.optim_spec(config), 1)


def _variables(state):
  return {'params': state.params, 'batch_stats': state.batch_stats}


def _random_weights(model, num_classes, seed=1):
  """Random variables of `model` (every leaf distinct; BatchNorm
  statistics > 0), as numpy."""
  config = _config(model)
  shapes = jax.eval_shape(lambda: registry.create_model(specs.model_spec(config, num_classes)).init(jax.random.key(0),
                                np.zeros((1, SIZE, SIZE, 3)), train=False))
  rng = np.random.default_rng(seed)
  weights = jax.tree.map(
      lambda s: rng.normal(scale=0.1, size=s.shape).astype(np.float32),
      shapes)
  weights['batch_stats'] = jax.tree.map(lambda v: 1 + np.abs(v),
                                        weights['batch_stats'])
  return weights


def _write(path, weights, model='resnet18', edit=None):
  """A .safetensors file of `weights` under the source's names (with
  PyTorch's BatchNorm counters, as real files have them); `edit` changes
  its dict first. Returns the path."""
  tensors = name_maps.to_state_dict(weights, name_maps.MAPS[model])
  for key in [k for k in tensors if k.endswith('.running_var')]:
    tensors[key[:-len('running_var')] + 'num_batches_tracked'] = np.array(
        7, np.int64)
  if edit:
    edit(tensors)
  save_file(tensors, str(path))
  return str(path)


@pytest.fixture(scope='module')
def weights():
  """resnet18's weights for 10 classes."""
  return _random_weights('resnet18', 10)


@pytest.fixture(scope='module')
def state10():
  return _state(10)


def _leaves(tree):
  return dict(name_maps.flatten(jax.tree.map(np.asarray, tree)))


def test_the_head_starts_new_and_everything_else_is_the_files(
    tmp_path, caplog, weights):
  path = _write(tmp_path / 'resnet18.safetensors', weights)
  state = _state(3, ema_decay=0.9)
  with caplog.at_level(logging.INFO):
    loaded, record = pretrained_init.initialize(state, path, 'resnet18', 3)
  ours = _leaves(_variables(loaded))
  theirs, fresh = _leaves(weights), _leaves(_variables(state))
  head = {p for p in ours if p[1] == 'Dense_0'}
  assert head == {('params', 'Dense_0', 'kernel'), ('params', 'Dense_0',
                                                     'bias')}
  for path_, value in ours.items():
    want = fresh[path_] if path_ in head else theirs[path_]
    np.testing.assert_array_equal(value, want, err_msg=str(path_))
  # The moving average starts from the loaded weights too.
  jax.tree.map(np.testing.assert_array_equal, loaded.ema,
               _variables(loaded))
  with open(path, 'rb') as f:
    sha256 = hashlib.sha256(f.read()).hexdigest()
  assert record == {
      'path': path, 'sha256': sha256,
      'source': 'torchvision/timm ResNet names', 'tensors_loaded': 100,
      'left_new': [
          "params/Dense_0/bias [3] (the file's fc.bias [10]: another class "
          'count)',
          "params/Dense_0/kernel [512, 3] (the file's fc.weight [10, 512]: "
          'another class count)']}
  assert (f'Initialised resnet18 from {path} (torchvision/timm ResNet '
          f'names, sha256 {sha256}): 100 tensors loaded; left new: '
          'params/Dense_0/bias [3]') in caplog.text


def test_the_same_class_count_loads_the_head(tmp_path, weights, state10):
  path = _write(tmp_path / 'w.safetensors', weights)
  loaded, record = pretrained_init.initialize(state10, path, 'resnet18', 10)
  assert record['tensors_loaded'] == 102 and record['left_new'] == []
  jax.tree.map(np.testing.assert_array_equal, _variables(loaded), weights)


def _replace(key, value):
  def edit(tensors):
    tensors[key] = value
  return edit


def _delete(key):
  def edit(tensors):
    del tensors[key]
  return edit


@pytest.mark.parametrize('edit, message', [
    (_replace('layer1.0.conv1.weight', np.zeros((64, 64, 1, 1), np.float32)),
     'the tensor layer1.0.conv1.weight has shape [64, 64, 1, 1] in the '
     'file, but resnet18 needs [64, 64, 3, 3] there (our '
     "params/ResNetBlock_0/Conv_0/kernel): give a file of resnet18's "
     'torchvision/timm ResNet weights.'),
    (_delete('layer4.1.bn2.running_var'),
     'resnet18 needs the tensor layer4.1.bn2.running_var [512] (our '
     'batch_stats/ResNetBlock_7/BatchNorm_1/var), which the file lacks'),
    (_replace('layer5.0.conv1.weight', np.zeros((8, 8, 3, 3), np.float32)),
     "the file's tensor layer5.0.conv1.weight [8, 8, 3, 3] has no place in "
     'resnet18'),
    # A head that differs in more than the class count is no head of ours.
    (_replace('fc.weight', np.zeros((10, 256), np.float32)),
     'the tensor fc.weight has shape [10, 256] in the file, but resnet18 '
     'needs [10, 512] there (our params/Dense_0/kernel)'),
])
def test_any_other_mismatch_is_one_line_naming_the_tensor(
    tmp_path, edit, message, weights, state10):
  path = _write(tmp_path / 'w.safetensors', weights, edit=edit)
  with pytest.raises(UserError) as error:
    pretrained_init.initialize(state10, path, 'resnet18', 10)
  assert str(error.value).startswith(f'--config.init_from={path}: {message}')
  assert '\n' not in str(error.value)


def _resolved(**overrides):
  return resolve.for_training(helpers.small_config(
      'cifar10', **{'dropout_rate': 0.0, **overrides}), 4)


def test_resolution_takes_the_weights_layout_and_an_absolute_path(
    tmp_path, monkeypatch, weights):
  path = _write(tmp_path / 'w.safetensors', weights)
  monkeypatch.chdir(tmp_path)
  config = _resolved(model='resnet18', init_from='w.safetensors')
  assert config.init_from == path and config.model_layout == 'torch'
  assert _resolved(model='resnet18').model_layout == 'flax'  # unchanged
  effnet = _write(tmp_path / 'e.safetensors',
                  _random_weights('efficientnet_lite0', 4), 'efficientnet_lite0')
  assert _resolved(model='efficientnet_lite0', init_from=effnet,
                   dropout_rate=0.2).model_layout == 'flax'


def test_bad_sources_are_refused_before_any_work(tmp_path):
  (tmp_path / 'notes.safetensors').write_text('not weights')
  (tmp_path / 'empty').mkdir()
  effnet = _write(tmp_path / 'e.safetensors',
                  _random_weights('efficientnet_lite0', 4), 'efficientnet_lite0')
  other = str(tmp_path / 'other.safetensors')
  save_file({'conv.weight': np.zeros((2, 3, 1, 1), np.float32)}, other)
  for overrides, message in [
      ({'init_from': f'{tmp_path}/missing.safetensors'},
       f'--config.init_from={tmp_path}/missing.safetensors: no such file or '
       'folder'),
      ({'init_from': f'{tmp_path}/notes.safetensors'},
       f'--config.init_from={tmp_path}/notes.safetensors is not a '
       '.safetensors file (Error while deserializing header: '),
      ({'init_from': str(tmp_path / 'empty')},
       f'--config.init_from={tmp_path}/empty is a folder but not a workdir '
       'of this program'),
      ({'init_from': effnet},
       f'--config.init_from={effnet} holds weights for efficientnet_lite0 '
       '(efficientnet-lite-pytorch names), not for --config.model=resnet18: '
       'set --config.model=efficientnet_lite0'),
      ({'init_from': other},
       f'--config.init_from={other}: its tensor names (conv.weight, ...) are '
       'not those of a known source'),
      ({'model': 'cnn', 'dropout_rate': 0.5, 'model_layout': 'torch'},
       "--config.model_layout='torch' is invalid: it must be 'flax' for "
       '--config.model=cnn'),
  ]:
    with pytest.raises(UserError) as error:
      _resolved(**{'model': 'resnet18', **overrides})
    assert str(error.value).startswith(message), str(error.value)


def _run_cli(capsys, config, workdir):
  """dispatch.run('train'), which must refuse with one `error:` line."""
  with pytest.raises(SystemExit) as exit_info:
    dispatch.run('train', config, str(workdir))
  assert exit_info.value.code == 2
  (line,) = [l for l in capsys.readouterr().err.splitlines()
             if l.startswith('error:')]
  return line


def test_mismatches_and_other_files_exit_2_with_one_line(
    tmp_path, capsys, two_class_folder, weights):
  shape = _write(tmp_path / 'shape.safetensors', weights, edit=_replace(
      'bn1.weight', np.ones((32,), np.float32)))
  name = _write(tmp_path / 'name.safetensors', weights, edit=_replace(
      'layer1.0.se.weight', np.ones((4,), np.float32)))
  (tmp_path / 'model.pth').write_bytes(b'PK\x03\x04 a pickle in a zip')
  for path, message in [
      (shape, f'error: --config.init_from={shape}: the tensor bn1.weight has '
              'shape [32] in the file, but resnet18 needs [64] there (our '
              'params/bn_init/scale)'),
      (name, f"error: --config.init_from={name}: the file's tensor "
             'layer1.0.se.weight [4] has no place in resnet18'),
      (str(tmp_path / 'model.pth'),
       f'error: --config.init_from={tmp_path}/model.pth is not a '
       '.safetensors file')]:
    config = helpers.small_config(f'folder:{two_class_folder}',
                                  model='resnet18', dropout_rate=0.0,
                                  init_from=path, num_epochs=1)
    line = _run_cli(capsys, config, tmp_path / 'run')
    assert line.startswith(message), line
    checkpoints = tmp_path / 'run' / 'checkpoints'
    assert not checkpoints.exists() or not os.listdir(checkpoints)


@pytest.mark.slow
def test_training_records_its_weights_and_a_resumed_run_does_not_reread_them(
    tmp_path, two_class_folder, caplog, weights):
  path = _write(tmp_path / 'w.safetensors', weights)
  with open(path, 'rb') as f:
    sha256 = hashlib.sha256(f.read()).hexdigest()
  workdir = tmp_path / 'run'
  config = helpers.small_config(f'folder:{two_class_folder}',
                                model='resnet18', dropout_rate=0.0,
                                init_from=path, num_epochs=1,
                                learning_rate=1e-9)
  with caplog.at_level(logging.INFO):
    helpers.train_in(config, workdir)
  assert 'Initialised resnet18 from' in caplog.text
  store = checkpoint_store.CheckpointStore(str(workdir))
  step, metadata = store.restore_metadata()
  store.close()
  assert metadata['config']['model_layout'] == 'torch'
  assert metadata['config']['init_from'] == path
  record = metadata['init_from']
  assert (record['path'], record['sha256'], record['tensors_loaded']) == (
      path, sha256, 100)  # all but the head (2 classes, not 10)
  # The trained weights are the file's (after a step of 1e-9).
  restored = checkpoint_loader.load(str(workdir), step)
  conv = restored.state.params['ResNetBlock_3']['Conv_1']['kernel']
  np.testing.assert_allclose(
      conv, weights['params']['ResNetBlock_3']['Conv_1']['kernel'],
      atol=1e-6)
  # Other weights in the same file: the resumed run keeps its own, and
  # records the first file's checksum.
  _write(path, _random_weights('resnet18', 10, seed=5))
  caplog.clear()
  config.num_epochs = 2
  with caplog.at_level(logging.INFO):
    helpers.train_in(config, workdir)
  assert 'Initialised' not in caplog.text
  assert 'Resumed from checkpoint step' in caplog.text
  store = checkpoint_store.CheckpointStore(str(workdir))
  _, metadata = store.restore_metadata()
  store.close()
  assert metadata['epoch'] == 2 and metadata['init_from'] == record
  # Evaluation builds the checkpoint's layout without the file.
  os.remove(path)
  result = evaluate.evaluate_checkpoint(None, str(workdir))
  assert result['num_examples'] > 0


@pytest.mark.slow
def test_a_checkpoint_of_this_program_is_a_source(trained, colour_folder,
                                                  tmp_path, caplog):
  """The seed CNN trained on 2 classes starts a 3-class run: all but its
  head (Dense_1) is the checkpoint's."""
  _, source_workdir = trained
  source = checkpoint_loader.load(source_workdir)
  config = helpers.small_config(f'folder:{colour_folder}', num_epochs=1,
                                init_from=source_workdir)
  workdir = tmp_path / 'run'
  with caplog.at_level(logging.INFO):
    helpers.train_in(config, workdir)
  store = checkpoint_store.CheckpointStore(str(workdir))
  _, metadata = store.restore_metadata()
  store.close()
  assert metadata['init_from'] == {
      'path': source_workdir,
      'sha256': source.metadata['state_sha256'],
      'source': f'cnn checkpoint step {source.step}', 'tensors_loaded': 6,
      'left_new': [
          "params/Dense_1/bias [3] (the checkpoint's [2]: 2 classes)",
          "params/Dense_1/kernel [128, 3] (the checkpoint's [128, 2]: 2 "
          'classes)']}
  assert f'Initialised cnn from {source_workdir}' in caplog.text
