"""predict.py: --mode=predict with the checkpoint of the session's report run
(`run`, tests/conftest.py): any image kind, unreadable files skipped, the
same answers as eval, a UserError for what cannot be predicted, and a CSV
per run (an earlier one is never overwritten)."""

import glob
import logging
import os
import shutil
import weakref

from PIL import Image
import pytest

from imgclf_jax.errors import UserError
from imgclf_jax.modes import evaluate
from imgclf_jax.modes import predict
from tests import helpers
from tests.helpers import read_csv as _csv


@pytest.mark.slow
def test_predict_on_training_images_matches_eval(run):
  _, workdir, config, _ = run
  train_config = config.copy_and_resolve_references()
  train_config.eval_split = 'train'
  result = evaluate.evaluate_checkpoint(train_config, workdir)
  rows = {r['file']: r for r in _csv(
      os.path.join(workdir, result['files']['predictions_csv']))}
  chosen = sorted(rows)[::5]
  for path in chosen:
    out = predict.predict_images(None, workdir, path)
    (row,) = out['predictions']
    name, p = row['top_k'][0]
    assert name == rows[path]['predicted']
    assert p == pytest.approx(float(rows[path]['confidence']), abs=1e-5)
    assert rows[path]['top2'].split(':')[0] == row['top_k'][1][0]


@pytest.mark.slow
def test_predict_any_image_kind_and_skips_unreadable_files(run, tmp_path,
                                                          capsys, caplog):
  workdir = str(tmp_path / 'run')  # (its CSVs: this test's alone)
  shutil.copytree(run[1], workdir,
                  ignore=shutil.ignore_patterns('predictions_step*.csv'))
  red, blue = helpers.COLOURS[0], helpers.COLOURS[2]
  Image.new('RGBA', (61, 45), (*red, 255)).save(tmp_path / 'a_rgba.png')
  Image.new('RGB', (300, 200), blue).save(tmp_path / 'b_big.jpg')
  Image.new('L', (16, 16), 128).save(tmp_path / 'c_gray.png')
  Image.new('RGB', (16, 16), red).save(tmp_path / 'd.bmp')
  (tmp_path / 'e_broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 not a JPEG')
  (tmp_path / 'f_notes.txt').write_text('hello')
  # A glob keeps files with an image extension (f_notes.txt is left out).
  out = predict.predict_images(None, workdir, str(tmp_path / '*'))
  printed = capsys.readouterr().out.splitlines()
  by_file = {os.path.basename(r['file']): r for r in out['predictions']}
  assert sorted(by_file) == ['a_rgba.png', 'b_big.jpg', 'c_gray.png', 'd.bmp']
  assert by_file['a_rgba.png']['top_k'][0][0] == 'class_0'
  assert by_file['d.bmp']['top_k'][0][0] == 'class_0'
  assert by_file['b_big.jpg']['top_k'][0][0] == 'class_2'
  for r in out['predictions']:
    assert len(r['top_k']) == 2  # config.top_k of the checkpoint
    assert r['top_k'][0][1] >= r['top_k'][1][1]
  assert [os.path.basename(s['file']) for s in out['skipped']] == [
      'e_broken.jpg']
  # One printed line per file, in order; the skipped ones say so by name.
  assert len(printed) == 5
  assert printed[0].startswith(str(tmp_path / 'a_rgba.png') + '\tclass_0 ')
  assert printed[4].startswith(str(tmp_path / 'e_broken.jpg') + '\tskipped: ')
  rows = _csv(out['csv'])
  assert out['csv'] == os.path.join(workdir, 'predictions_step12.csv')
  assert [os.path.basename(r['file']) for r in rows] == [
      'a_rgba.png', 'b_big.jpg', 'c_gray.png', 'd.bmp', 'e_broken.jpg']
  assert rows[0]['class_1'] == 'class_0' and float(rows[0]['prob_1']) > 0.5
  assert rows[4]['class_1'] == '' and 'cannot read image' in rows[4]['error']
  # A file named explicitly is tried whatever its extension.
  with pytest.raises(UserError, match=r'f_notes\.txt: cannot read image'):
    predict.predict_images(None, workdir, str(tmp_path / 'f_notes.txt'))
  assert _csv(out['csv']) == rows  # the refused run left the CSV as it was
  # A later run's answers go to a file of their own, and the log says so;
  # the earlier CSV stays.
  caplog.set_level(logging.INFO)
  for run_number in (2, 3):
    again = predict.predict_images(None, workdir, str(tmp_path / 'd.bmp'))
    assert again['csv'] == os.path.join(
        workdir, f'predictions_step12_run{run_number}.csv')
    assert [r['file'] for r in _csv(again['csv'])] == [str(tmp_path / 'd.bmp')]
    assert (f'Predicted 1 image(s) with checkpoint step 12 (0 skipped); '
            f'written to {again["csv"]} (a new name: predictions_step12.csv '
            "holds an earlier run's).") in caplog.messages
  assert _csv(out['csv']) == rows
  assert sorted(f for f in os.listdir(workdir)
                if f.startswith('predictions')) == [
      'predictions_step12.csv', 'predictions_step12_run2.csv',
      'predictions_step12_run3.csv']


@pytest.mark.slow
def test_predict_streams_in_batches_and_writes_as_it_goes(run, tmp_path,
                                                          capsys, monkeypatch):
  data, workdir, config, _ = run
  files = sorted(glob.glob(os.path.join(data, 'train', '*', '*.png')))[::2]
  for i, path in enumerate(files):  # 18 images and a broken one, in order
    os.symlink(path, tmp_path / f'{i:02d}.png')
  (tmp_path / '07b.png').write_bytes(b'not a png')
  paths = predict.image_paths(str(tmp_path))
  batch = config.eval_batch_size  # 8: the checkpoint's
  assert len(paths) == 19 and batch == 8
  alive, max_alive, printed, printed_when_read = [], [], [], []
  real_load = predict.load_image

  def load_image(path, size, channels, crop):
    printed.extend(capsys.readouterr().out.splitlines())
    printed_when_read.append(len(printed))
    image = real_load(path, size, channels, crop)
    alive[:] = [r for r in alive if r() is not None] + [weakref.ref(image)]
    max_alive.append(len(alive))
    return image

  monkeypatch.setattr(predict, 'load_image', load_image)
  out = predict.predict_images(None, workdir, str(tmp_path))
  printed.extend(capsys.readouterr().out.splitlines())
  # Decoded images are let go batch by batch (not all 18 held at once).
  assert max(max_alive) <= batch
  # The first batch's lines were out before the last files were read.
  assert printed_when_read[-1] >= batch
  assert [line.split('\t')[0] for line in printed] == paths
  assert printed[8] == f'{tmp_path}/07b.png\tskipped: cannot read image: ' + (
      out['skipped'][0]['error'][len('cannot read image: '):])
  assert len(out['predictions']) == 18
  assert [r['file'] for r in _csv(out['csv'])] == paths
  # The same answers in batches of 3 (padded to the 4 devices).
  monkeypatch.setattr(predict, 'load_image', real_load)
  small = config.copy_and_resolve_references()
  small.eval_batch_size = 3
  again = predict.predict_images(small, workdir, str(tmp_path))
  assert [r['file'] for r in again['predictions']] == [
      r['file'] for r in out['predictions']]
  for a, b in zip(again['predictions'], out['predictions']):
    assert a['top_k'][0][0] == b['top_k'][0][0]
    assert a['top_k'][0][1] == pytest.approx(b['top_k'][0][1], abs=1e-5)


def _touch(root, *names):
  for name in names:
    os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
    with open(os.path.join(root, name), 'wb'):
      pass


def test_images_keeps_image_files_and_does_not_follow_folder_links(tmp_path,
                                                                   caplog):
  photos = tmp_path / 'photos'
  _touch(photos, 'a.jpg', 'b.PNG', 'notes.txt', 'sub/c.gif', 'sub/d.sh',
         '._a.jpg', '.hidden/e.jpg')
  _touch(tmp_path / 'etc', 'passwd.jpg', 'shadow')
  (photos / 'loop').symlink_to('.')  # glob's '**' would go round it
  (photos / 'sub' / 'etc').symlink_to(tmp_path / 'etc')
  (photos / 'linked.jpg').symlink_to(tmp_path / 'etc' / 'passwd.jpg')
  with caplog.at_level('WARNING'):
    found = predict.image_paths(f'{photos}/**')
  assert found == [f'{photos}/{n}' for n in ('a.jpg', 'b.PNG', 'linked.jpg',
                                             'sub/c.gif')]
  assert 'left out 2 file(s) without an image extension' in caplog.text
  assert 'links to folders are not followed (2, e.g.' in caplog.text
  assert predict.image_paths(f'{photos}/*/*') == [f'{photos}/sub/c.gif']
  # A folder: the image files in it and below it, as '**' finds them
  # (hidden ones, AppleDouble ._a.jpg, and links to folders left out).
  assert predict.image_paths(str(photos)) == found
  (tmp_path / 'empty' / 'sub').mkdir(parents=True)
  with pytest.raises(UserError, match=r'the folder holds no files'):
    predict.image_paths(str(tmp_path / 'empty'))
  # A file named explicitly is taken whatever its extension.
  assert predict.image_paths(f'{photos}/notes.txt') == [f'{photos}/notes.txt']
  with pytest.raises(UserError, match=r'it matches no image files \(\.jpg, '
                     r'.*\), only 2 other file\(s\) \(e\.g\. .*notes\.txt\): '
                     r'name a file explicitly'):
    predict.image_paths(f'{photos}/**/*[th]')


def test_images_naming_a_file_with_glob_characters(tmp_path):
  (tmp_path / 'photo[1].png').write_bytes(b'')
  (tmp_path / 'photo1.png').write_bytes(b'')
  assert predict.image_paths(str(tmp_path / 'photo[1].png')) == [
      str(tmp_path / 'photo[1].png')]  # the file itself, not the glob's match
  assert predict.image_paths(str(tmp_path / 'photo[0-9].png')) == [
      str(tmp_path / 'photo1.png')]


@pytest.mark.slow
def test_predict_errors(run, tmp_path):
  _, workdir, _, _ = run
  with pytest.raises(UserError, match=r'no file matches it as a glob'):
    predict.predict_images(None, workdir, str(tmp_path / 'nothing*.jpg'))
  (tmp_path / 'bad.png').write_bytes(b'not a png')
  with pytest.raises(UserError, match=r'none of the 1 file\(s\).*bad\.png'):
    predict.predict_images(None, workdir, str(tmp_path / 'bad.png'))
  with pytest.raises(UserError, match=r'no checkpoint in'):
    predict.predict_images(None, str(tmp_path / 'empty'),
                           str(tmp_path / 'bad.png'))
