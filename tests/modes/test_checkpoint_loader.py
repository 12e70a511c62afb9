"""checkpoint_loader.py: a checkpoint restored for eval, predict and export
without initialising the model (outside jit, an initialisation compiles
one XLA program per operation: seconds of each short mode's start-up)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# In a fresh process (this one may hold the programs compiled already): the
# XLA programs compiled while loading, and the state loaded.
LOAD = '''
import json, sys
import jax
from jax import monitoring
import numpy as np
compiled = []
monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kwargs: compiled.append(event))
from imgclf_jax.modes import checkpoint_loader
loaded = checkpoint_loader.load(sys.argv[1], mode='predict')
print(json.dumps({
    'compiled': compiled.count('/jax/core/compile/backend_compile_duration'),
    'step': int(loaded.state.step), 'checkpoint': loaded.step,
    'params': {jax.tree_util.keystr(path): [list(leaf.shape), str(leaf.dtype),
                                            float(np.abs(leaf).sum())]
               for path, leaf in jax.tree_util.tree_leaves_with_path(
                   loaded.state.params)}}))
'''


def test_loading_compiles_no_program_per_layer(run):
  _, workdir, _, _ = run
  # (Trained on 4 devices, loaded on 1: the arrays come to its device.)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2',
             XLA_FLAGS='--xla_force_host_platform_device_count=1')
  done = subprocess.run([sys.executable, '-c', LOAD, workdir], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  loaded = json.loads(done.stdout.splitlines()[-1])
  # The seed CNN (2 convolutions and pools, 2 dense layers) is not run: at
  # most the couple of programs of the restore itself (a random key).
  assert loaded['compiled'] <= 3, loaded['compiled']
  assert loaded['step'] == loaded['checkpoint'] > 0
  # The checkpoint's arrays, in the model's structure.
  assert {path: value[:2] for path, value in loaded['params'].items()} == {
      "['Conv_0']['bias']": [[32], 'float32'],
      "['Conv_0']['kernel']": [[3, 3, 3, 32], 'float32'],
      "['Conv_1']['bias']": [[64], 'float32'],
      "['Conv_1']['kernel']": [[3, 3, 32, 64], 'float32'],
      "['Dense_0']['bias']": [[128], 'float32'],
      "['Dense_0']['kernel']": [[1024, 128], 'float32'],
      "['Dense_1']['bias']": [[3], 'float32'],
      "['Dense_1']['kernel']": [[128, 3], 'float32']}
  assert all(value[2] > 0 for value in loaded['params'].values())
