"""main.py: the command line as a user runs it (real files, one device,
subprocesses), and its malloc tuning in a fresh interpreter."""

import json
import os
import subprocess
import sys

import pytest

from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args, devices=1):
  flags = f'--xla_force_host_platform_device_count={devices}' if devices > 1 else ''
  env = dict(os.environ, XLA_FLAGS=flags, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, 'main.py', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_train_then_eval_from_the_command_line(tmp_path):
  data = helpers.make_image_folder(tmp_path / 'data', per_class=(10, 10, 10),
                                   ext='jpg', size=(40, 30))
  workdir = str(tmp_path / 'run')
  common = ['--config=configs/folder.py', f'--workdir={workdir}',
            f'--config.dataset=folder:{data}', '--config.image_size=24']
  trained = _main(*common, '--config.num_epochs=2', '--config.batch_size=9')
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert 'epoch 2/2' in trained.stderr
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  last = records[-1]
  assert last['epoch'] == 2 and last['step'] == 6  # 27 train images / 9
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3', '6']

  evaluated = _main(*common, '--mode=eval')
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  result = json.loads(evaluated.stdout)
  assert result['accuracy'] == last['validation_accuracy']
  assert result['num_examples'] == 3

  # Without --config the checkpoint's own config is used; on 2 devices, which
  # its training batch of 9 does not divide (only evaluation batches must).
  bare = _main(f'--workdir={workdir}', '--mode=eval', devices=2)
  assert bare.returncode == 0, bare.stderr[-3000:]
  assert json.loads(bare.stdout)['accuracy'] == last['validation_accuracy']
  assert 'precision  recall' in bare.stderr  # the per-class table, logged

  best = _main(f'--workdir={workdir}', '--mode=eval', '--step=best')
  assert best.returncode == 0, best.stderr[-3000:]
  best_result = json.loads(best.stdout)
  # The checkpoint of the highest validation accuracy (the later one on a
  # tie, as checkpoints.CheckpointStore.best_step documents; its own test has
  # distinct accuracies), and evaluating it gives that accuracy again.
  best_record = max(records, key=lambda r: (r['validation_accuracy'], r['step']))
  assert best_result['step'] == best_record['step']
  assert best_result['accuracy'] == best_record['validation_accuracy']

  # Predict a training image; a file that is no image is a one-line error.
  image = os.path.join(data, 'train', 'class_2', '000.jpg')
  (tmp_path / 'notes.jpg').write_text('not an image')
  predicted = _main(f'--workdir={workdir}', '--mode=predict',
                    f'--images={image}', '--step=6')
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  lines = predicted.stdout.splitlines()
  assert len(lines) == 1 and lines[0].startswith(image + '\tclass_')
  assert len(lines[0].split('\t')) == 4  # file and the top 3 classes
  mixed = _main(f'--workdir={workdir}', '--mode=predict',
                f'--images={tmp_path}/notes.jpg')
  assert mixed.returncode == 2
  errors = [l for l in mixed.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and 'Traceback' not in mixed.stderr
  assert errors[0].startswith(
      f'error: none of the 1 file(s) named by --images={tmp_path}/notes.jpg '
      f'could be read as an image (first: {tmp_path}/notes.jpg: cannot read')


def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path):
  result = _main('--config=configs/cifar10.py', f'--workdir={tmp_path}',
                 '--config.learning_rate=-1')
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert errors == ['error: --config.learning_rate=-1.0 is invalid: it must be '
                    '> 0.']
  assert 'Traceback' not in result.stderr


# ----------------------------------------------------------------------------
# main.tune_malloc


CODE = ('import sys; sys.path.insert(0, %r); import main; '
        'print(main.tune_malloc())' % ROOT)


def _run(**env):
  return subprocess.run([sys.executable, '-c', CODE], capture_output=True,
                        text=True, check=True,
                        env=dict(os.environ, **env)).stdout.strip()


def test_glibc_accepts_the_settings_and_the_switch_turns_them_off():
  assert _run() == 'True'  # these machines run glibc
  assert _run(IMGCLF_JAX_TUNE_MALLOC='0') == 'False'
