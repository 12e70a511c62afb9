"""checkpoint_store.py: the latest and the best checkpoints are kept (also when a
run left more), a save that fails is one UserError at its step that keeps the
earlier steps, and a checkpoint that cannot be used (none, a missing step,
damaged or unlike its checksum, of another format version, config, dataset or
classes) is refused with a UserError that leaves the workdir as it was."""

import asyncio
import gc
import glob
import json
import logging
import os
import re
import shutil

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint._src.serialization import serialization
import pytest

from imgclf_jax.checkpoints import checkpoint_store
from imgclf_jax.checkpoints import integrity
from imgclf_jax.errors import UserError
from imgclf_jax.modes import evaluate
from imgclf_jax.modes import predict
from tests import helpers
from tests.helpers import edit_metadata as _edit_metadata
from tests.helpers import snapshot as _snapshot
from tests.helpers import train_in as _train

ACC = checkpoint_store.BEST_METRIC

# How TensorStore reports a write to a full disk (Orbax raises it as is).
NO_SPACE = ('RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at '
            'local file "{}": Failed to write 4096 bytes to file 11: No space '
            "left on device [os_error_code='28']")


@pytest.fixture
def folder(two_class_folder):
  """The folder the `trained` fixture trains on (tests/conftest.py)."""
  return two_class_folder


def _state(value=1.0):
  """A small state of jax arrays, as a TrainState is (each read on its own)."""
  return {'kernel': jnp.full((64, 32), value, jnp.float32),
          'bias': jnp.arange(32, dtype=jnp.float32) * value,
          'step': jnp.asarray(7, jnp.int32)}


def _step_folders(workdir):
  return sorted(os.listdir(os.path.join(workdir, 'checkpoints')))


def test_best_checkpoint_is_kept_besides_the_latest(tmp_path):
  store = checkpoint_store.CheckpointStore(str(tmp_path), max_to_keep=2)
  accuracies = [0.5, 0.9, 0.6, 0.7, 0.65]
  for step, acc in enumerate(accuracies, start=1):
    store.save(step, {'w': np.full(3, step, np.float32)}, {'epoch': step},
               metrics={'validation_accuracy': acc})
  store.close()
  store = checkpoint_store.CheckpointStore(str(tmp_path), max_to_keep=2)
  assert store.steps() == [2, 4, 5]
  assert store.best_step() == 2
  assert store.restore_metadata('best') == (2, {
      'format_version': checkpoint_store.FORMAT_VERSION, 'epoch': 2,
      checkpoint_store.CHECKSUM_KEY: integrity.state_checksum(
          {'w': np.full(3, 2, np.float32)})})
  assert store.restore_metadata('latest')[0] == 5
  assert store.restore_metadata('4')[0] == 4
  with pytest.raises(UserError, match=r'--step=newest: use latest, best or a '
                     r'step number \(\[2, 4, 5\]\)'):
    store.restore_metadata('newest')
  store.close()


def test_retention_removes_the_steps_an_earlier_run_left(tmp_path, caplog):
  # A run killed after its last save had written, before it removed the
  # oldest step, leaves a step more than its policy keeps: here a policy of 2
  # finds the 4 steps of a store that kept 4.
  store = checkpoint_store.CheckpointStore(str(tmp_path), max_to_keep=4)
  for step, acc in zip((1, 2, 3, 4), (0.9, 0.5, 0.6, 0.7)):
    store.save(step, _state(step), {'epoch': step}, metrics={ACC: acc})
  store.close()
  checkpoint_store.CheckpointStore(str(tmp_path)).close()  # readers remove none
  assert _step_folders(tmp_path) == ['1', '2', '3', '4']
  caplog.set_level(logging.INFO)
  checkpoint_store.CheckpointStore(str(tmp_path), max_to_keep=2).close()
  # The latest 2 and the best (1) are kept.
  assert _step_folders(tmp_path) == ['1', '3', '4']
  assert ('Removed checkpoint steps [2] (left by an earlier run)'
          in caplog.text)
  # A save applies the policy too (Orbax's), with the same line.
  store = checkpoint_store.CheckpointStore(str(tmp_path), max_to_keep=1)
  store.save(5, _state(5), {'epoch': 5}, metrics={ACC: 0.1})
  assert 'Removed checkpoint steps [3, 4] (at save)' in caplog.text
  store.close()
  assert _step_folders(tmp_path) == ['1', '5']


def test_a_state_unlike_its_checksum_or_not_finite_is_damaged(tmp_path):
  store = checkpoint_store.CheckpointStore(str(tmp_path), max_to_keep=3)
  for step, value in ((1, 1.0), (2, np.nan), (3, 3.0)):
    store.save(step, _state(value), {'epoch': step}, metrics={ACC: 0.5})
  store.close()
  store = checkpoint_store.CheckpointStore(str(tmp_path))
  np.testing.assert_array_equal(
      store.restore_state(1, _state(0.0))['kernel'], _state(1.0)['kernel'])
  damaged = (r'checkpoint {} in .*checkpoints is damaged or incomplete '
             r'\({}\): move its folder .*checkpoints/{} out of the way '
             r'\(training then resumes from the latest other step\), or '
             r'evaluate another with --step \({}\)\.$')
  with pytest.raises(UserError, match=damaged.format(
      2, 'its arrays hold NaN or infinite values', 2, r'\[1, 3\]')):
    store.restore_state(2, _state(0.0))
  # Step 3's checksum replaced by step 1's, then removed.
  _edit_metadata(str(tmp_path), 3, lambda m: m.update(
      {checkpoint_store.CHECKSUM_KEY: integrity.state_checksum(
          _state(1.0))}))
  with pytest.raises(UserError, match=damaged.format(
      3, 'its arrays differ from the checksum recorded when it was saved', 3,
      r'\[1, 2\]')):
    store.restore_state(3, _state(0.0))
  _edit_metadata(str(tmp_path), 3,
                 lambda m: m.pop(checkpoint_store.CHECKSUM_KEY))
  with pytest.raises(UserError, match=damaged.format(
      3, 'its metadata has no state_sha256', 3, r'\[1, 2\]')):
    store.restore_state(3, _state(0.0))
  store.close()


def test_a_failed_save_is_one_line_at_its_step_and_keeps_the_others(
    tmp_path, monkeypatch, caplog):
  store = checkpoint_store.CheckpointStore(str(tmp_path), max_to_keep=2)
  for step in (1, 2):
    store.save(step, _state(step), {'epoch': step}, metrics={ACC: 0.5})

  async def full_disk(value, tensorstore_spec, **kwargs):
    del value, kwargs
    raise ValueError(NO_SPACE.format(tensorstore_spec))
  # The arrays' write (in Orbax's background thread) fails as on a full disk.
  monkeypatch.setattr(serialization, 'async_serialize_from_host', full_disk)
  with pytest.raises(UserError) as raised:
    store.save(3, _state(3), {'epoch': 3}, metrics={ACC: 0.9})
  assert re.fullmatch(
      r'checkpoint 3 could not be written to \S+/checkpoints: the disk is full '
      r'\(a checkpoint takes about [\d.]+ kB, [\d.]+ (bytes|[kMGTP]B) is free '
      r'there\): free space there, or train in a --workdir on another disk, '
      r'then run the same command again \(it resumes from step 2; steps kept: '
      r'\[1, 2\]\)\.', str(raised.value)), str(raised.value)
  store.close()  # does not raise the same failure again
  errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
  assert not errors, [r.getMessage()[:200] for r in errors]
  # Step 1 kept (step 3 would have replaced it), no unfinished folder left.
  assert _step_folders(tmp_path) == ['1', '2']
  monkeypatch.undo()
  store = checkpoint_store.CheckpointStore(str(tmp_path))
  for step in (1, 2):
    np.testing.assert_array_equal(
        store.restore_state(step, _state(0.0))['bias'], _state(step)['bias'])
  store.close()


def test_a_failed_read_leaves_no_read_pending(tmp_path, monkeypatch):
  store = checkpoint_store.CheckpointStore(str(tmp_path), max_to_keep=1)
  store.save(1, _state(), {'epoch': 1}, metrics={ACC: 0.5})
  store.close()
  read_shard = serialization._read_shard  # pylint: disable=protected-access
  reads = {'started': 0, 'finished': 0}

  async def first_fails(*args, **kwargs):
    reads['started'] += 1
    if reads['started'] == 1:
      raise ValueError('DATA_LOSS: a damaged array file')
    await asyncio.sleep(0.5)  # the others are still reading when it fails
    shard = await read_shard(*args, **kwargs)
    reads['finished'] += 1
    return shard
  monkeypatch.setattr(serialization, '_read_shard', first_fails)
  store = checkpoint_store.CheckpointStore(str(tmp_path))
  with pytest.raises(UserError, match=r'checkpoint 1 in .* is damaged or '
                     r'incomplete \(Exception: Encountered error while '
                     r'reading array index'):
    store.restore_state(1, _state(0.0))
  store.close()
  # Orbax closed its event loop at the first failure: the other reads would
  # never finish, and die at garbage collection ('Exception ignored in ...').
  assert reads['started'] == 3 and reads['finished'] == 2, reads


@pytest.mark.slow
def test_eval_step_best_is_the_best_validation_accuracy(run):
  _, workdir, _, _ = run
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  best = max(records, key=lambda r: (r['validation_accuracy'], r['step']))
  result = evaluate.evaluate_checkpoint(None, workdir, step='best')
  assert result['step'] == best['step']
  assert result['accuracy'] == best['validation_accuracy']


def test_eval_without_checkpoint(tmp_path):
  with pytest.raises(UserError, match=r'no checkpoint in .*checkpoints'):
    evaluate.evaluate_checkpoint(None, str(tmp_path))
  with pytest.raises(UserError, match=r'no checkpoint'):
    evaluate.evaluate_checkpoint(
        helpers.small_config('cifar10'), str(tmp_path / 'never_made'))


@pytest.mark.slow
def test_eval_of_a_missing_step(trained):
  _, workdir = trained
  with pytest.raises(UserError, match=r'--step=7: no such checkpoint.*\[2\]'):
    evaluate.evaluate_checkpoint(None, workdir, step=7)


@pytest.mark.slow
@pytest.mark.parametrize('overrides, message', [
    ({'image_size': 20}, r'image_size: checkpoint 16 vs now 20'),
    # Adam -> AdamW: other optimizer state.
    ({'weight_decay': 0.01}, r'\(weight_decay: checkpoint 0.0 vs now 0.01\)'),
])
def test_incompatible_config_keeps_the_workdir(trained, folder, overrides,
                                               message):
  _, workdir = trained
  before = _snapshot(workdir)
  changed = helpers.small_config(f'folder:{folder}', num_epochs=2, **overrides)
  with pytest.raises(UserError, match=r'incompatible config.*' + message +
                     r'.*new --workdir'):
    _train(changed, workdir)
  assert _snapshot(workdir) == before


@pytest.mark.slow
def test_resume_on_a_grown_image_folder_is_refused(tmp_path):
  # The validation split is held out of train/: with more images, some
  # images trained on would move into it.
  root = helpers.make_image_folder(tmp_path / 'data', per_class=(10, 10))
  config = helpers.small_config(f'folder:{root}', num_epochs=1)
  _train(config, tmp_path / 'run')
  before = _snapshot(tmp_path / 'run')
  helpers.make_image_folder(tmp_path / 'more', per_class=(0, 4), seed=1)
  for name in os.listdir(tmp_path / 'more' / 'train' / 'class_1'):
    os.rename(tmp_path / 'more' / 'train' / 'class_1' / name,
              tmp_path / 'data' / 'train' / 'class_1' / f'new_{name}')
  config.num_epochs = 2
  with pytest.raises(UserError, match=r"dataset or its split settings .*"
                     r"changed since the checkpoints.*"
                     r"checkpoint \{'train': 18, 'validation': 2\} vs now "
                     r"\{'train': 22, 'validation': 2\}.*new --workdir"):
    _train(config, tmp_path / 'run')
  assert _snapshot(tmp_path / 'run') == before


def _overwrite_unnoticed(state_dir):
  """Overwrites 4 KB near the middle of the largest array file under
  `state_dir` with random bytes, where Orbax reads them back without an error
  (as the issue's file was: in a stretch stored uncompressed); returns the
  file. Orbax alone then restores the garbage."""
  files = [p for p in glob.glob(os.path.join(state_dir, '**'), recursive=True)
           if os.path.isfile(p)]
  largest = max(files, key=os.path.getsize)
  with open(largest, 'rb') as f:
    original = f.read()
  for fraction in (0.5, 0.6, 0.4, 0.7, 0.3, 0.8, 0.2):
    with open(largest, 'r+b') as f:
      f.seek(int(len(original) * fraction))
      f.write(np.random.default_rng(0).bytes(4096))
    try:
      with integrity.draining_event_loops():
        ocp.StandardCheckpointer().restore(state_dir)
      return largest
    except Exception:  # pylint: disable=broad-except  (a compressed stretch)
      with open(largest, 'wb') as f:
        f.write(original)
  pytest.fail(f'every overwrite of {largest} is noticed by Orbax')


@pytest.mark.slow
def test_a_checkpoint_with_overwritten_bytes_is_refused(trained, folder):
  _, workdir = trained
  directory = os.path.join(workdir, 'checkpoints')
  _overwrite_unnoticed(os.path.join(directory, '2', 'state'))
  before = _snapshot(directory)
  damaged = (r'^checkpoint 2 in .*checkpoints is damaged or incomplete \(its '
             r'arrays differ from the checksum recorded when it was saved\): '
             r'move its folder .*checkpoints/2 out of the way \(training then '
             r'resumes from the latest other step\)\.$')
  with pytest.raises(UserError, match=damaged):
    evaluate.evaluate_checkpoint(None, workdir)
  image = glob.glob(os.path.join(folder, 'train', 'class_0', '*'))[0]
  with pytest.raises(UserError, match=damaged):
    predict.predict_images(None, workdir, image)
  with pytest.raises(UserError, match=damaged):
    _train(helpers.small_config(f'folder:{folder}', num_epochs=2), workdir)
  assert _snapshot(directory) == before
  # No results computed from the garbage (the NaN loss and
  # probabilities).
  assert not glob.glob(os.path.join(workdir, 'eval_*'))
  assert not glob.glob(os.path.join(workdir, 'predictions_*'))


@pytest.mark.slow
# A failed restore leaves no read behind to die later ('Exception ignored in:
# <coroutine ...>', 'Event loop is closed'): such a warning fails this test.
@pytest.mark.filterwarnings('error::pytest.PytestUnraisableExceptionWarning')
def test_damaged_checkpoints_are_named_and_kept(trained, folder, capfd):
  _, workdir = trained
  directory = os.path.join(workdir, 'checkpoints')
  # Step 2's array index or its tree's metadata missing: damage, not a model
  # mismatch ...
  for name in ('manifest.ocdbt', '_METADATA'):
    path = os.path.join(directory, '2', 'state', name)
    os.rename(path, path + '.away')
    with pytest.raises(UserError, match=rf'^checkpoint 2 in .*checkpoints is '
                       rf'damaged or incomplete \(no state/{name}\): move its '
                       r'folder .*checkpoints/2 out of the way \(training then '
                       r'resumes from the latest other step\)\.$'):
      evaluate.evaluate_checkpoint(None, workdir)
    os.rename(path + '.away', path)
  # ... then its array files cut short; an empty step folder 9 (an
  # interrupted copy).
  for path in glob.glob(os.path.join(directory, '2', 'state', 'ocdbt.process_0',
                                     'd', '*')):
    with open(path, 'r+b') as f:
      f.truncate(100)
  os.makedirs(os.path.join(directory, '9'))
  before = _snapshot(workdir)
  with pytest.raises(UserError, match=r'^checkpoint 2 in .*checkpoints is '
                     r'damaged or incomplete \(.*\): move its folder '
                     r'.*checkpoints/2 out of the way \(training then resumes '
                     r'from the latest other step\), or evaluate another with '
                     r'--step \(\[9\]\)\.$'):
    evaluate.evaluate_checkpoint(None, workdir, step=2)
  with pytest.raises(UserError, match=r'checkpoint 9 .* damaged or incomplete '
                     r'\(KeyError: .*metadata.*\).*\(\[2\]\)'):
    evaluate.evaluate_checkpoint(None, workdir)
  resumed = helpers.small_config(f'folder:{folder}', num_epochs=2)
  with pytest.raises(UserError, match=r'checkpoint 9 .* damaged or incomplete'):
    _train(resumed, workdir)
  assert _snapshot(workdir) == before
  gc.collect()  # what a failed read left behind would die now
  noise = capfd.readouterr().err
  for sign in ('Exception ignored', 'Event loop is closed', 'never retrieved',
               'Task was destroyed'):
    assert sign not in noise, noise[-2000:]


@pytest.mark.slow
def test_training_stops_at_a_failed_save(folder, tmp_path, monkeypatch):
  write = serialization.async_serialize_from_host

  async def full_at_step_4(value, tensorstore_spec, **kwargs):
    if f'{os.sep}4.orbax-checkpoint-tmp' in json.dumps(tensorstore_spec):
      raise ValueError(NO_SPACE.format(tensorstore_spec))
    return await write(value, tensorstore_spec, **kwargs)
  monkeypatch.setattr(serialization, 'async_serialize_from_host',
                      full_at_step_4)
  config = helpers.small_config(f'folder:{folder}', num_epochs=3)
  with pytest.raises(UserError, match=r'^checkpoint 4 could not be written to '
                     r'.*the disk is full .*\(it resumes from step 2; steps '
                     r'kept: \[2\]\)\.$'):
    _train(config, tmp_path)
  assert _step_folders(tmp_path) == ['2']


@pytest.mark.slow
def test_a_finished_run_removes_the_steps_a_killed_save_left(folder, tmp_path,
                                                             caplog):
  config = helpers.small_config(f'folder:{folder}', num_epochs=1,
                                max_checkpoints_to_keep=1)
  _train(config, tmp_path)
  # Killed after its save had written, before it removed older steps: the
  # run's step 2 with two older ones, 0 (as good as 2: step 2 is the best,
  # the latest among equals) and 1 (better than any).
  directory = os.path.join(tmp_path, 'checkpoints')
  for step, accuracy in ((0, None), (1, 2.0)):
    shutil.copytree(os.path.join(directory, '2'),
                    os.path.join(directory, str(step)))
    if accuracy is not None:
      with open(os.path.join(directory, str(step), 'metrics', 'metrics'),
                'w') as f:
        json.dump({ACC: accuracy}, f)
  with caplog.at_level(logging.INFO):
    _train(config, tmp_path)  # finds training finished
  assert _step_folders(tmp_path) == ['1', '2']
  assert 'Removed checkpoint steps [0] (left by an earlier run)' in caplog.text


@pytest.mark.slow
def test_a_save_on_a_really_full_disk(tmp_path):
  """A tmpfs of 1 MB (where this runs as root and may mount one)."""
  with helpers.small_disk(tmp_path / 'disk', '1m') as disk:
    store = checkpoint_store.CheckpointStore(str(disk), max_to_keep=3)
    rng = np.random.default_rng(0)
    states = [{'w': jnp.asarray(rng.normal(size=(64, 1024)), jnp.float32)}
              for _ in range(2)]  # 262 kB each, hardly compressible
    store.save(1, states[0], {'epoch': 1}, metrics={ACC: 0.5})
    helpers.fill_disk(disk, leave=64 * 1024)  # all but 64 KB taken
    with pytest.raises(UserError, match=r'^checkpoint 2 could not be written '
                       r'to .*disk/checkpoints: the disk is full \(a '
                       r'checkpoint takes about [23]\d\d kB, .* is free '
                       r'there\): .*\(it resumes from step 1; steps kept: '
                       r'\[1\]\)\.$'):
      store.save(2, states[1], {'epoch': 2}, metrics={ACC: 0.6})
    store.close()
    assert _step_folders(disk) == ['1']
    store = checkpoint_store.CheckpointStore(str(disk))
    np.testing.assert_array_equal(
        store.restore_state(1, {'w': jnp.zeros((64, 1024))})['w'],
        states[0]['w'])
    store.close()


@pytest.mark.slow
@pytest.mark.parametrize('version', [None, checkpoint_store.FORMAT_VERSION + 1])
def test_checkpoint_of_another_format_version_is_refused(trained, folder,
                                                         version):
  _, workdir = trained
  _edit_metadata(workdir, 2, lambda m: m.update(format_version=version))
  before = _snapshot(workdir)
  message = (rf'checkpoint 2 .* has format version {version or "none"}; this '
             rf'imgclf_jax reads version {checkpoint_store.FORMAT_VERSION}')
  with pytest.raises(UserError, match=message):
    evaluate.evaluate_checkpoint(None, workdir)
  with pytest.raises(UserError, match=message):
    _train(helpers.small_config(f'folder:{folder}', num_epochs=2), workdir)
  assert _snapshot(workdir) == before


@pytest.mark.slow
def test_eval_on_a_dataset_with_other_classes(trained, tmp_path):
  config, workdir = trained
  other_root = helpers.make_image_folder(tmp_path / 'other', per_class=(4, 4, 4))
  other = config.copy_and_resolve_references()
  other.dataset = f'folder:{other_root}'
  # A folder may lack some of the checkpoint's classes, not have others.
  with pytest.raises(UserError, match=r"class folder .*/class_2 is not the "
                     r"checkpoint's classes \['class_0', 'class_1'\]"):
    evaluate.evaluate_checkpoint(other, workdir)
