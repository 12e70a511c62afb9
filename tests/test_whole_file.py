"""whole_file.py: a file is replaced whole or not at all, and a write that
fails (a full disk) is one UserError naming the file."""

import errno
import os

import pytest

from imgclf_jax import whole_file
from imgclf_jax.errors import UserError


def test_an_error_in_the_block_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path):
  path = tmp_path / 'report.csv'
  path.write_text('old\n')
  os.chmod(path, 0o640)
  with pytest.raises(ZeroDivisionError):
    with whole_file.replacing(str(path)) as f:
      f.write('half of the new')
      _ = 1 / 0
  assert path.read_text() == 'old\n'
  assert os.listdir(tmp_path) == ['report.csv']
  whole_file.write_text(str(path), 'new\n')
  assert path.read_text() == 'new\n'
  assert os.stat(path).st_mode & 0o777 == 0o640  # its mode kept
  assert os.listdir(tmp_path) == ['report.csv']


def test_a_new_file_gets_the_mode_of_any_new_file(tmp_path):
  whole_file.write_text(str(tmp_path / 'a.json'), '{}')
  with open(tmp_path / 'b.json', 'w') as f:
    f.write('{}')
  assert (os.stat(tmp_path / 'a.json').st_mode ==
          os.stat(tmp_path / 'b.json').st_mode)


def test_a_disk_that_fills_up_is_one_line_and_no_file(tmp_path, monkeypatch):
  def no_space(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  # Where a full disk shows on a network file system: at the flush to disk.
  monkeypatch.setattr(whole_file.os, 'fsync', no_space)
  path = str(tmp_path / 'eval.json')
  with pytest.raises(UserError, match=(
      rf'^could not write {path}: the disk is full \(.* free there\): free '
      r'space there, or use a --workdir on another disk, then run the same '
      r'command again \(nothing was written in its place\)\.$')):
    whole_file.write_text(path, '{"accuracy": 1.0}')
  assert os.listdir(tmp_path) == []
