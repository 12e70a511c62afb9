"""predict.py: --mode=predict with the checkpoint of the session's report run
(`run`, tests/conftest.py): any image kind, unreadable files skipped, the
same answers as eval, a UserError for what cannot be predicted."""

import os

from PIL import Image
import pytest

from imgclf_jax import evaluate
from imgclf_jax import predict
from imgclf_jax.errors import UserError
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
                                                          capsys):
  _, workdir, _, _ = run
  red, blue = helpers.COLOURS[0], helpers.COLOURS[2]
  Image.new('RGBA', (61, 45), (*red, 255)).save(tmp_path / 'a_rgba.png')
  Image.new('RGB', (300, 200), blue).save(tmp_path / 'b_big.jpg')
  Image.new('L', (16, 16), 128).save(tmp_path / 'c_gray.png')
  Image.new('RGB', (16, 16), red).save(tmp_path / 'd.bmp')
  (tmp_path / 'e_broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 not a JPEG')
  (tmp_path / 'f_notes.txt').write_text('hello')
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
  assert sorted(os.path.basename(s['file']) for s in out['skipped']) == [
      'e_broken.jpg', 'f_notes.txt']
  # One printed line per file, in order; the skipped ones say so by name.
  assert len(printed) == 6
  assert printed[0].startswith(str(tmp_path / 'a_rgba.png') + '\tclass_0 ')
  assert printed[4].startswith(str(tmp_path / 'e_broken.jpg') + '\tskipped: ')
  rows = _csv(out['csv'])
  assert out['csv'] == os.path.join(workdir, 'predictions_step12.csv')
  assert [os.path.basename(r['file']) for r in rows] == [
      'a_rgba.png', 'b_big.jpg', 'c_gray.png', 'd.bmp', 'e_broken.jpg',
      'f_notes.txt']
  assert rows[0]['class_1'] == 'class_0' and float(rows[0]['prob_1']) > 0.5
  assert rows[4]['class_1'] == '' and 'cannot read image' in rows[4]['error']


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
