"""setup.py: a corrupt validation image stops training before it starts;
init_from_data gets exactly its sample of training images; a new state is
one compiled program, and a resumed run initialises no model (outside jit,
an initialisation compiles one XLA program per operation: seconds of
start-up)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from imgclf_jax.config import specs
from imgclf_jax.errors import UserError
from imgclf_jax.models import registry
from imgclf_jax.training import setup
from imgclf_jax.training import train_state as train_state_lib
from tests import helpers
from tests.helpers import train_in as _train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_a_corrupt_validation_image_stops_training_before_it_starts(tmp_path):
  data = helpers.make_image_folder(tmp_path / 'data', per_class=(6, 6))
  config = helpers.small_config(f'folder:{data}')
  # The validation split is carved out of train/: corrupt one of its files.
  bad = helpers.make_source(config).files('validation')[-1]
  with open(bad, 'wb') as f:
    f.write(b'not an image')
  workdir = str(tmp_path / 'run')
  with pytest.raises(UserError,
                     match=rf'^cannot decode image file {bad} \(.*\): remove '
                     r'or re-save it, then run the same command again\.$'):
    _train(config, workdir)
  # Refused before its first step: no trace, not even the workdir it made.
  assert not os.path.exists(workdir)


class _Recorder:
  """A model's init_from_data that keeps the images it is given."""

  def init_from_data(self, params, images):
    self.images = images
    return params


@pytest.mark.parametrize('cache', [True, False])
def test_init_from_data_gets_the_eval_images_of_its_sample_only(tmp_path,
                                                                 cache):
  root = helpers.make_image_folder(tmp_path, per_class=(9, 9, 9))
  config = helpers.small_config(f'folder:{root}', cache=cache,
                                eval_batch_size=4)
  pipeline = helpers.make_pipeline(config)
  everything = np.concatenate([b['image']
                               for b in pipeline.eval_batches('train')])
  state = train_state_lib.create_train_state(
      jax.random.key(0), registry.create_model(specs.model_spec(config, 3)),
      (16, 16, 3), specs.optim_spec(config), steps_per_epoch=3)
  recorder = _Recorder()
  setup.init_from_data(recorder, state, pipeline, seed=3, num_images=10)
  chosen = np.sort(np.random.default_rng(3).choice(len(everything), 10,
                                                   replace=False))
  assert chosen.tolist() != list(range(10))  # not simply the first images
  np.testing.assert_array_equal(recorder.images, everything[chosen])


# In a fresh process (this one may hold the programs compiled already): the
# XLA programs lowered (compiled, or read from a persistent compilation
# cache) while a new TrainState of the seed CNN is made.
NEW_STATE = '''
import json
import jax
from jax import monitoring
from imgclf_jax.config import keys, specs
from imgclf_jax.models import registry
from imgclf_jax.training import train_state
compiled = []
monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kwargs: compiled.append(event))
config = keys.get_config()
rng = jax.random.key(0)
before = len(compiled)
state = train_state.create_train_state(
    rng, registry.create_model(specs.model_spec(config, 10)), (32, 32, 3),
    specs.optim_spec(config), 10)
jax.block_until_ready(state.params)
print(json.dumps(compiled[before:].count(
    '/jax/core/compile/jaxpr_to_mlir_module_duration')))
'''


@pytest.mark.slow
def test_a_new_train_state_is_one_compiled_program():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', XLA_FLAGS='')
  done = subprocess.run([sys.executable, '-c', NEW_STATE], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert json.loads(done.stdout.splitlines()[-1]) == 1


def test_a_resumed_run_initialises_no_model(trained, monkeypatch):
  config, workdir = trained
  def no_init(*args, **kwargs):
    raise AssertionError('a resumed run initialised the model')
  monkeypatch.setattr(train_state_lib, 'create_train_state', no_init)
  config.num_epochs = 2
  _train(config, workdir)
  assert [r['epoch'] for r in helpers.records(workdir)] == [1, 2]
