"""main.py and dispatch.py: the command line as a user runs it (real files, one
device, subprocesses), its flag errors and workdir checks as one `error:`
line, and its malloc tuning in a fresh interpreter."""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys

from absl import flags
import pytest

from imgclf_jax.config import keys
from imgclf_jax.modes import checkpoint_loader
from imgclf_jax.modes import dispatch
import main
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

  # The README's eval command after training on a folder: configs/cifar10.py
  # names TFDS cifar10, but --config.dataset is not on the command line, so
  # the checkpoint's folder is evaluated, and the log says so.
  readme = _main('--config=configs/cifar10.py', f'--workdir={workdir}',
                 '--mode=eval')
  assert readme.returncode == 0, readme.stderr[-3000:]
  assert json.loads(readme.stdout)['dataset'] == f'folder:{data}'
  assert json.loads(readme.stdout)['accuracy'] == last['validation_accuracy']
  assert (f"--mode=eval evaluates on the checkpoint's dataset folder:{data}, "
          "not on --config's cifar10") in readme.stderr
  assert (f'Evaluating checkpoint step 6 on dataset folder:{data}, split '
          'validation.') in readme.stderr
  # Set on the command line, another dataset is: here a folder holding only
  # a test split (its classes are the checkpoint's).
  shutil.copytree(os.path.join(data, 'train'), tmp_path / 'eval_only' / 'test')
  other = _main('--config=configs/cifar10.py', f'--workdir={workdir}',
                '--mode=eval', f'--config.dataset=folder:{tmp_path}/eval_only',
                '--config.eval_split=test')
  assert other.returncode == 0, other.stderr[-3000:]
  assert json.loads(other.stdout)['num_examples'] == 30
  assert (f'Evaluating checkpoint step 6 on dataset folder:{tmp_path}/'
          f'eval_only, split test (trained on folder:{data}).') in other.stderr

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


def _one_error_line(result):
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1, result.stderr[-3000:]
  return errors[0]


def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path):
  result = _main('--config=configs/cifar10.py', f'--workdir={tmp_path}',
                 '--config.learning_rate=-1')
  assert _one_error_line(result) == ('error: --config.learning_rate=-1.0 is '
                                     'invalid: it must be > 0.')


# Runs the command with `sys.argv[1:]`, then (also after its sys.exit) prints
# which of TensorFlow, JAX and the trainer it imported.
IMPORTED = '''
import atexit, sys
atexit.register(lambda: print('imported:', sorted(
    m for m in ('tensorflow', 'jax', 'imgclf_jax.training.train')
    if m in sys.modules)))
from imgclf_jax.command_line import run
run()
'''


def _imported(result) -> list:
  (line,) = [l for l in result.stdout.splitlines() if l.startswith('imported:')]
  return eval(line.split(':', 1)[1])  # pylint: disable=eval-used


def test_a_folder_that_is_not_there_is_reported_before_tf_and_jax_load(
    tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  for mode, config in (('train', 'configs/folder.py'),
                       ('eval', 'configs/cifar10.py')):
    result = subprocess.run(
        [sys.executable, '-c', IMPORTED, f'--config={config}',
         f'--workdir={tmp_path}/run', f'--mode={mode}',
         f'--config.dataset=folder:{tmp_path}/photos'], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300)
    assert _one_error_line(result) == (
        f'error: --config.dataset=folder:{tmp_path}/photos: no such folder. '
        'Point it at a folder laid out root/<class>/<image> or '
        'root/<split>/<class>/<image>.')
    assert _imported(result) == []
  assert not os.path.exists(tmp_path / 'run')


@pytest.mark.parametrize('mode', ['eval', 'predict', 'export'])
def test_the_short_modes_do_not_import_the_trainer(tmp_path, mode):
  # (No checkpoint in the workdir: each stops at its one line, having
  # imported what it runs.)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run(
      [sys.executable, '-c', IMPORTED, f'--workdir={tmp_path}',
       f'--mode={mode}', f'--images={ROOT}/README.md'], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=300)
  assert _one_error_line(result).startswith('error: no checkpoint')
  assert _imported(result) == ['jax', 'tensorflow']


@pytest.mark.slow
def test_bad_config_files_seeds_and_workdirs_from_the_command_line(tmp_path):
  (tmp_path / 'broken.py').write_text('def get_config(:\n')
  folder = helpers.make_image_folder(tmp_path / 'data', per_class=(4, 4))
  (tmp_path / 'a_file').write_text('not a folder')
  common = ['--config=configs/folder.py', f'--config.dataset=folder:{folder}']
  run = str(tmp_path / 'run')
  for args, expected in [
      ([f'--config={tmp_path}/missing.py', f'--workdir={run}'],
       f'--config={tmp_path}/missing.py: cannot read the config file'),
      ([f'--config={tmp_path}/broken.py', f'--workdir={run}'],
       f'--config={tmp_path}/broken.py: the config file has a syntax error '
       'at line 1'),
      ([*common, '--config.seed=1e20', f'--workdir={run}'],
       "--config.seed=1e20: invalid literal for int() with base 10: '1e20' "
       '(--config.seed takes a value of type int, e.g. --config.seed=0).'),
      ([*common, '--config.seed=-1', f'--workdir={run}'],
       '--config.seed=-1 is invalid: it must be a whole number in '
       '[0, 4294967295].'),
      ([*common, f'--workdir={tmp_path}/a_file'],
       f'--workdir={tmp_path}/a_file is a file, not a folder')]:
    assert _one_error_line(_main(*args)).startswith('error: ' + expected)
    assert not os.path.exists(run)  # a refused run writes nothing


# ----------------------------------------------------------------------------
# main.parse_flags, in this process


def _parse(*args):
  """main.parse_flags on `args` with main.py's flags in a fresh flag set:
  (exit status or None, the error lines, the flag values)."""
  argv = ['main.py', *args]
  flag_values = flags.FlagValues()
  main.define_flags(flag_values, sys_argv=argv)
  try:
    main.parse_flags(argv, flag_values)
  except SystemExit as e:
    return e.code, flag_values
  return None, flag_values


@pytest.mark.parametrize('text, message', [
    (None, r'--config=CONFIG: cannot read the config file \(\[Errno 2\] No '
           r'such file or directory: .CONFIG.\): give the path of a config '
           r"file, or a recipe's name, e.g. --config=cifar10 \(--help lists "
           r'them\)\.$'),
    ('def get_config():\n  return [\n',
     r'--config=CONFIG: the config file has a syntax error at line 2: '),
    ('def get_config():\n  raise ValueError("no data here")\n',
     r'--config=CONFIG: the config file raised ValueError: no data here '
     r'\(line 2\)\. Fix it'),
    ('import os\ndef get_config():\n  return os.environ["NOT_SET_X"]\n',
     r"--config=CONFIG: the config file raised KeyError: 'NOT_SET_X' "
     r'\(line 3\)'),
])
def test_a_config_file_that_cannot_be_loaded_is_one_line(tmp_path, capsys,
                                                         text, message):
  path = tmp_path / 'config.py'
  if text is not None:
    path.write_text(text)
  status, _ = _parse(f'--config={path}', '--workdir=w')
  lines = capsys.readouterr().err.splitlines()
  assert status == 2 and len(lines) == 1, lines
  assert re.match('error: ' + message.replace('CONFIG', re.escape(str(path))),
                  lines[0]), lines[0]


@pytest.mark.parametrize('args, message', [
    (['--config.seed=1e20'], "error: --config.seed=1e20: invalid literal for "
     "int() with base 10: '1e20' (--config.seed takes a value of type int, "
     'e.g. --config.seed=0).'),
    (['--config.num_epochs=1e9'], 'error: --config.num_epochs=1e9: invalid '
     "literal for int() with base 10: '1e9' (--config.num_epochs takes a "
     'value of type int, e.g. --config.num_epochs=20).'),
    (['--config.sed=3'], "error: --config.sed=3: the config has no key 'sed' "
     '(did you mean --config.seed?): --help lists the keys.'),
    (['--config.num_epoch=3'], "error: --config.num_epoch=3: the config has "
     "no key 'num_epoch' (did you mean --config.num_epochs?): --help lists "
     'the keys.'),
    (['--mode=tune'], 'error: flag --mode=tune: value should be one of '
     '<train|eval|predict|export> (--help lists the flags).'),
])
def test_a_bad_flag_value_is_one_line(capsys, args, message):
  status, _ = _parse(f'--config={ROOT}/configs/cifar10.py', '--workdir=w',
                     *args)
  assert status == 2
  assert capsys.readouterr().err.splitlines() == [message]


@pytest.mark.parametrize('flag', ['--help', '-h', '-?', '--helpshort'])
def test_help_exits_0_with_the_flags_and_the_config_keys(capsys, flag):
  status, _ = _parse(flag)  # no --workdir: help needs none
  out = capsys.readouterr().out
  assert status == 0
  assert out.startswith('imgclf_jax command line: train, evaluate a '
                        'checkpoint, or predict images.\n')
  for name in ('--config', '--workdir', '--mode', '--step', '--images'):
    assert f'\n  {name}: ' in out
  listed = out.split('config keys (--config.KEY=VALUE;')[1]
  assert os.path.join('imgclf_jax', 'config', 'keys.py') in listed
  assert all(re.search(rf'\b{key}\b', listed)
             for key in keys.get_config().keys())


def test_help_and_mistakes_from_another_folder(tmp_path):
  # main.py run from another folder: --help exits 0 (absl's exits 1); a
  # relative --config is looked for in that folder, the one line says so and
  # names the recipe; a recipe's name and a config file load from any
  # folder.
  def run(*args, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'),
                           *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
  for flag, shows in (('--help', 'config keys (--config.KEY=VALUE;'),
                      ('--helpfull', '--workdir: Directory for checkpoints')):
    shown = run(flag, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shows in shown.stdout
  assert _one_error_line(run('--config=configs/cifar10.py', '--workdir=w',
                             cwd=tmp_path)) == (
      "error: --config=configs/cifar10.py: cannot read the config file "
      "([Errno 2] No such file or directory: 'configs/cifar10.py'), looked "
      f'for in the current folder {tmp_path}: give the path of a config '
      'file, or the recipe by name: --config=cifar10.')
  assert _one_error_line(run('--config=cifar10', '--workdir=w',
                             '--config.num_epoch=3', cwd=tmp_path)) == (
      "error: --config.num_epoch=3: the config has no key 'num_epoch' (did "
      'you mean --config.num_epochs?): --help lists the keys.')
  assert _one_error_line(run('--config=cifar10.py', '--workdir=w',
                             '--config.num_epoch=3',
                             cwd=os.path.join(ROOT, 'configs'))) == (
      "error: --config.num_epoch=3: the config has no key 'num_epoch' (did "
      'you mean --config.num_epochs?): --help lists the keys.')
  assert not os.path.exists(tmp_path / 'w')


def test_good_flags_parse(tmp_path):
  status, values = _parse(f'--config={ROOT}/configs/cifar10.py',
                          f'--workdir={tmp_path}', '--config.seed=7')
  assert status is None and values.config.seed == 7


def test_unexpected_arguments_are_one_line(capsys):
  # An unquoted glob: the shell hands main.py the files it matched.
  with pytest.raises(SystemExit) as exit_info:
    main.main(['main.py', 'b.jpg', 'c.jpg'])
  assert exit_info.value.code == 2
  (line,) = capsys.readouterr().err.splitlines()
  assert line.startswith("error: unexpected argument(s) ['b.jpg', 'c.jpg']: ")
  assert "quote a glob (--images='photos/*.jpg')" in line


# ----------------------------------------------------------------------------
# dispatch.check_workdir: refused before any work, nothing written


@contextlib.contextmanager
def _read_only(folder):
  """`folder` made read-only for this process, root included: chmod for
  other users, an immutable folder (chattr +i) for root."""
  folder = str(folder)
  if os.geteuid() != 0:
    mode = os.stat(folder).st_mode
    os.chmod(folder, 0o555)
    undo = lambda: os.chmod(folder, mode)
  else:
    chattr = shutil.which('chattr')
    if not chattr or subprocess.run([chattr, '+i', folder],
                                    capture_output=True).returncode:
      pytest.skip('running as root and chattr +i does not work here')
    undo = lambda: subprocess.run([chattr, '-i', folder], check=True)
  try:
    with pytest.raises(OSError):  # the folder really is read-only
      open(os.path.join(folder, 'probe'), 'w').close()
    yield
  finally:
    undo()


def _run_cli(capsys, mode, config, workdir, **kwargs):
  """dispatch.run, which must refuse with one `error:` line: that line."""
  with pytest.raises(SystemExit) as exit_info:
    dispatch.run(mode, config, str(workdir), **kwargs)
  assert exit_info.value.code == 2
  (line,) = capsys.readouterr().err.splitlines()
  return line


def test_workdir_that_is_a_file_or_under_one(tmp_path, capsys):
  config = helpers.small_config(f'folder:{tmp_path}/nothing_read')
  (tmp_path / 'notes').write_text('keep me')
  for mode in dispatch.MODES:
    line = _run_cli(capsys, mode, config, tmp_path / 'notes', images='x.png')
    assert line == (f'error: --workdir={tmp_path}/notes is a file, not a '
                    'folder: give a folder for the checkpoints, logs and '
                    'reports (training creates it).')
  line = _run_cli(capsys, 'train', config, tmp_path / 'notes' / 'run')
  assert line == (f'error: --workdir={tmp_path}/notes/run cannot be created: '
                  f'{tmp_path}/notes is a file, not a folder.')
  assert (tmp_path / 'notes').read_text() == 'keep me'


def test_read_only_workdir_is_refused_before_any_work(tmp_path, capsys,
                                                      monkeypatch):
  def no_work(*args, **kwargs):
    raise AssertionError('a checkpoint was loaded for a read-only workdir')
  monkeypatch.setattr(checkpoint_loader, 'load', no_work)
  config = helpers.small_config(f'folder:{tmp_path}/nothing_read')
  (tmp_path / 'run').mkdir()
  with _read_only(tmp_path / 'run'):
    line = _run_cli(capsys, 'train', config, tmp_path / 'run')
    assert line == (f'error: --workdir={tmp_path}/run is not writable: '
                    'training writes its checkpoints and logs there; give a '
                    'folder you can write to.')
    line = _run_cli(capsys, 'train', config, tmp_path / 'run' / 'new')
    assert line.startswith(f'error: --workdir={tmp_path}/run/new cannot be '
                           f'created: {tmp_path}/run is not writable: ')
    line = _run_cli(capsys, 'eval', None, tmp_path / 'run')
    assert line == (f'error: --workdir={tmp_path}/run is not writable, and '
                    '--mode=eval writes its report (eval_<split>_step<N>.json, '
                    '.csv, .png) there: make it writable, or copy the run (cp '
                    f'-r {tmp_path}/run /tmp/run) and give --workdir=/tmp/run.')
    line = _run_cli(capsys, 'predict', None, tmp_path / 'run',
                    images=str(tmp_path))
    assert 'and --mode=predict writes predictions_step<N>.csv there' in line
  assert os.listdir(tmp_path / 'run') == []


@pytest.mark.slow
def test_eval_and_predict_of_a_read_only_finished_run(run, capsys):
  data, workdir, _, _ = run
  before = helpers.snapshot(workdir)
  with _read_only(workdir):
    for mode in ('eval', 'predict'):
      line = _run_cli(capsys, mode, None, workdir,
                      images=os.path.join(data, 'test'))
      assert line.startswith(f'error: --workdir={workdir} is not writable, '
                             f'and --mode={mode} writes ')
  assert helpers.snapshot(workdir) == before


# ----------------------------------------------------------------------------
# main.tune_malloc


CODE = ('import sys; sys.path.insert(0, %r); import main; '
        'print(main.tune_malloc())' % ROOT)


def _run(**env):
  return subprocess.run([sys.executable, '-c', CODE], capture_output=True,
                        text=True, check=True,
                        env=dict(os.environ, **env)).stdout.strip()


def test_glibc_accepts_the_settings_and_the_switch_turns_them_off():
  assert _run() == 'True'  # these machines run glibc (default: the CNN)
  assert _run(IMGCLF_JAX_TUNE_MALLOC='0') == 'False'


def test_malloc_tuning_only_for_the_models_it_was_measured_on():
  code = ('import sys; sys.path.insert(0, %r); from imgclf_jax import '
          'malloc_tuning as m; print(m.tune_malloc(sys.argv[1]))' % ROOT)
  base = {k: v for k, v in os.environ.items()
          if k != 'IMGCLF_JAX_TUNE_MALLOC'}

  def tuned(model, **env):
    return subprocess.run(
        [sys.executable, '-c', code, model], capture_output=True, text=True,
        check=True, env={**base, **env}).stdout.strip() == 'True'
  assert tuned('cnn') and tuned('cnn_plain')
  assert not tuned('fast_cifar') and not tuned('resnet18')
  assert tuned('fast_cifar', IMGCLF_JAX_TUNE_MALLOC='1')
  assert not tuned('cnn', IMGCLF_JAX_TUNE_MALLOC='0')
