"""checkpoints.py: the latest and the best checkpoints are kept, and a
checkpoint that cannot be used (none, a missing step, damaged, of another
format version, config, dataset or classes) is refused with a UserError that
leaves the workdir as it was."""

import glob
import json
import os

import numpy as np
import pytest

from imgclf_jax import checkpoints
from imgclf_jax import evaluate
from imgclf_jax.errors import UserError
from tests import helpers
from tests.helpers import edit_metadata as _edit_metadata
from tests.helpers import snapshot as _snapshot
from tests.helpers import train_in as _train


# A failed Orbax restore (the damaged-checkpoint test) leaves array-read
# coroutines and an asyncio loop behind; whichever test of this module runs
# when they are collected would warn ('Exception ignored in ...', 'Event loop
# is closed'). Those warnings are Orbax's clean-up, not this code's.
pytestmark = pytest.mark.filterwarnings(
    'ignore::pytest.PytestUnraisableExceptionWarning')


@pytest.fixture
def folder(two_class_folder):
  """The folder the `trained` fixture trains on (tests/conftest.py)."""
  return two_class_folder


def test_best_checkpoint_is_kept_besides_the_latest(tmp_path):
  store = checkpoints.CheckpointStore(str(tmp_path), max_to_keep=2)
  accuracies = [0.5, 0.9, 0.6, 0.7, 0.65]
  for step, acc in enumerate(accuracies, start=1):
    store.save(step, {'w': np.full(3, step, np.float32)}, {'epoch': step},
               metrics={'validation_accuracy': acc})
  store.close()
  store = checkpoints.CheckpointStore(str(tmp_path), max_to_keep=2)
  assert store.steps() == [2, 4, 5]
  assert store.best_step() == 2
  assert store.restore_metadata('best') == (
      2, {'format_version': checkpoints.FORMAT_VERSION, 'epoch': 2})
  assert store.restore_metadata('latest')[0] == 5
  assert store.restore_metadata('4')[0] == 4
  with pytest.raises(UserError, match=r'--step=newest: use latest, best or a '
                     r'step number \(\[2, 4, 5\]\)'):
    store.restore_metadata('newest')
  store.close()


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


@pytest.mark.slow
def test_damaged_checkpoints_are_named_and_kept(trained, folder):
  _, workdir = trained
  directory = os.path.join(workdir, 'checkpoints')
  # Step 2's array index missing (TensorStore raises ValueError NOT_FOUND,
  # not a model mismatch) ...
  manifest = os.path.join(directory, '2', 'state', 'manifest.ocdbt')
  os.rename(manifest, manifest + '.away')
  with pytest.raises(UserError, match=r'checkpoint 2 .* damaged or incomplete '
                     r'\(ValueError: NOT_FOUND'):
    evaluate.evaluate_checkpoint(None, workdir)
  os.rename(manifest + '.away', manifest)
  # ... then its array files cut short; an empty step folder 9 (an
  # interrupted copy).
  for path in glob.glob(os.path.join(directory, '2', 'state', 'ocdbt.process_0',
                                     'd', '*')):
    with open(path, 'r+b') as f:
      f.truncate(100)
  os.makedirs(os.path.join(directory, '9'))
  before = _snapshot(workdir)
  with pytest.raises(UserError, match=r'checkpoint 2 in .*checkpoints is '
                     r'damaged or incomplete \(.*\): move its folder '
                     r'.*checkpoints/2 out of the way \(training then resumes '
                     r'from the latest other step\), or evaluate another with '
                     r'--step \(\[9\]\)'):
    evaluate.evaluate_checkpoint(None, workdir, step=2)
  with pytest.raises(UserError, match=r'checkpoint 9 .* damaged or incomplete '
                     r'\(KeyError: .*metadata.*\).*\(\[2\]\)'):
    evaluate.evaluate_checkpoint(None, workdir)
  resumed = helpers.small_config(f'folder:{folder}', num_epochs=2)
  with pytest.raises(UserError, match=r'checkpoint 9 .* damaged or incomplete'):
    _train(resumed, workdir)
  assert _snapshot(workdir) == before


@pytest.mark.slow
@pytest.mark.parametrize('version', [None, checkpoints.FORMAT_VERSION + 1])
def test_checkpoint_of_another_format_version_is_refused(trained, folder,
                                                         version):
  _, workdir = trained
  _edit_metadata(workdir, 2, lambda m: m.update(format_version=version))
  before = _snapshot(workdir)
  message = (rf'checkpoint 2 .* has format version {version or "none"}; this '
             rf'imgclf_jax reads version {checkpoints.FORMAT_VERSION}')
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
  with pytest.raises(UserError, match=r'class names differ'):
    evaluate.evaluate_checkpoint(other, workdir)
