"""export.py: --mode=export of the session's report run (`run`,
tests/conftest.py) as a SavedModel, loaded in a fresh process by plain
TensorFlow (importing imgclf_jax made impossible there, whether or not it is
installed), which gives --mode=predict's probabilities for the same image
files, decoded at their own size and resized by the model."""

import json
import logging
import os
import shutil
import subprocess
import sys

from absl import logging as absl_logging
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from imgclf_jax.data import preprocess
from imgclf_jax.errors import UserError
from imgclf_jax.modes import dispatch
from imgclf_jax.modes import export
from imgclf_jax.modes import predict

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# Run in a fresh interpreter, in a folder without imgclf_jax: loads the
# SavedModel and calls both signatures on the images of images.npy.
SERVE = '''
import importlib.abc, importlib.util, json, sys

class NoImgclfJax(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] == 'imgclf_jax':
      raise ImportError(name + ' imported: the SavedModel needs imgclf_jax')

assert importlib.util.find_spec('imgclf_jax') is not None  # importable...
sys.meta_path.insert(0, NoImgclfJax())  # ... but not imported from here on
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
images = np.load('images.npy')  # uint8, decoded at the files' size
resized = np.load('resized.npy')  # uint8, as predict resized them
by_uint8 = model.signatures['serving_default'](images=tf.constant(images))
by_float = model.signatures['float_images'](
    images=tf.constant(resized.astype(np.float32) / 255))
with open(model.class_names_file.asset_path.numpy()) as f:
  asset = f.read().splitlines()
print(json.dumps({
    'uint8': by_uint8['probabilities'].numpy().tolist(),
    'float': by_float['probabilities'].numpy().tolist(),
    'class_name': [c.decode() for c in by_uint8['class_name'].numpy()],
    'class_names': [c.decode() for c in model.class_names.numpy()],
    'asset': asset}))
'''


def _serve(path, images, resized, folder):
  np.save(folder / 'images.npy', images)
  np.save(folder / 'resized.npy', resized)
  # imgclf_jax on the path, as after `pip install .`.
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2')
  done = subprocess.run([sys.executable, '-c', SERVE, path], cwd=folder,
                        env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.splitlines()[-1])


def test_exported_model_gives_predicts_probabilities(run, tmp_path, capsys,
                                                     caplog):
  data, trained, config, _ = run
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  caplog.set_level(logging.INFO)
  dispatch.run('export', None, workdir)  # as --mode=export
  result = json.loads(capsys.readouterr().out)
  # TensorFlow's INFO lines of saving are not shown; export's own is.
  said = [r.getMessage() for r in caplog.records]
  assert not [m for m in said if 'unsupported characters' in m or
              'Sharding callback' in m or 'Assets written' in m], said
  assert f'Exported checkpoint step {result["step"]} as a SavedModel to ' + (
      f'{result["path"]}.') in said
  step = result['step']
  assert result['path'] == os.path.join(workdir, 'export', f'step{step}')
  assert result['class_names'] == ['class_0', 'class_1', 'class_2']
  assert result['image_shape'] == [16, 16, 3]
  assert sorted(os.listdir(result['path'])) == [
      'assets', 'fingerprint.pb', 'saved_model.pb', 'variables']
  with pytest.raises(UserError, match=r'step\d+ already exists: remove it, '
                     r'or give another folder with --export_dir'):
    export.export_checkpoint(None, workdir)

  # --mode=predict's probabilities of every class (top_k = all 3).
  all_classes = config.copy_and_resolve_references()
  all_classes.top_k = 3
  folder = os.path.join(data, 'test')
  predicted = predict.predict_images(all_classes, workdir, folder)
  files = [row['file'] for row in predicted['predictions']]
  assert len(files) == 36
  want = np.array([[dict(row['top_k'])[c] for c in result['class_names']]
                   for row in predicted['predictions']])
  # The files decoded at their size (20 x 24), which the model resizes; and
  # as predict reads them (decoded, resized to 16 x 16), which it takes as
  # they are.
  images = np.stack([preprocess.decode_image(tf.io.read_file(f), 3).numpy()
                     for f in files])
  assert images.shape == (36, 20, 24, 3)
  resized = np.stack([predict.load_image(f, 16, 3) for f in files])
  served = _serve(result['path'], images, resized, tmp_path)
  np.testing.assert_allclose(served['uint8'], want, atol=1e-5)
  np.testing.assert_allclose(served['float'], want, atol=1e-5)
  assert served['class_name'] == [row['top_k'][0][0]
                                  for row in predicted['predictions']]
  assert served['class_names'] == served['asset'] == result['class_names']


def test_export_to_a_folder_of_choice(run, tmp_path):
  _, trained, _, _ = run
  target = tmp_path / 'served' / 'model'
  level = absl_logging.get_absl_logger().level
  result = export.export_checkpoint(None, trained, step='best',
                                    export_dir=str(target))
  # (TensorFlow's save sets absl's logger to WARNING; export puts it back.)
  assert absl_logging.get_absl_logger().level == level
  assert result['path'] == str(target)
  assert os.path.isfile(target / 'saved_model.pb')
  assert not os.path.exists(os.path.join(trained, 'export'))
  assert not os.path.exists(str(target) + '.partial')
  # Lowered for every platform, whatever exported it (here a CPU).
  saved = saved_model_pb2.SavedModel()
  with open(target / 'saved_model.pb', 'rb') as f:
    saved.ParseFromString(f.read())
  platforms = {tuple(p.decode() for p in node.attr['platforms'].list.s)
               for function in saved.meta_graphs[0].graph_def.library.function
               for node in function.node_def if node.op == 'XlaCallModule'}
  assert platforms == {('CPU', 'CUDA', 'TPU')}
