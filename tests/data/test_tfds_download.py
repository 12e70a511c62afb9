"""tfds_download.py: a TFDS dataset that is not prepared, with the network
monkeypatched (unreachable, silent, or failing mid-download): one UserError
(at once where the name lookup fails, after the probe's timeout where
nothing answers) with the offline advice, and no folder left behind."""

import logging
import os
import re
import socket
import time

import pytest
import tensorflow_datasets as tfds

from imgclf_jax.data import tfds_download
from imgclf_jax.errors import UserError
from tests import helpers

ADVICE = (r'On a machine with internet run tfds\.builder\(name\)\.'
          r'download_and_prepare\(\) and pass its data_dir with '
          r'--config\.data_dir=/path, or use '
          r'--config\.dataset=folder:/path/to/images\.')


def _offline(monkeypatch):
  """No name resolves and no connection is made: a machine without
  internet."""
  def no_network(address, *args, **kwargs):
    raise socket.gaierror(-2, 'Name or service not known')
  monkeypatch.setattr(socket, 'create_connection', no_network)
  monkeypatch.setattr(socket, 'getaddrinfo', no_network)
  for key in ('HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy'):
    monkeypatch.delenv(key, raising=False)


def test_offline_training_fails_at_the_name_lookup_and_leaves_no_folder(
    tmp_path, monkeypatch, caplog):
  _offline(monkeypatch)
  data_dir = tmp_path / 'tfds'
  config = helpers.small_config('cifar10', data_dir=str(data_dir))
  with pytest.raises(UserError) as error, caplog.at_level('INFO'):
    helpers.train_in(config, tmp_path / 'run')
  # Only the error: not TFDS's warning about the version folder that
  # tfds.builder made (cifar10/3.0.2 'has no dataset_info.json'), which the
  # failed download removes.
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING], (
      caplog.text)
  message = str(error.value)
  # The name lookup's own error, at once: no probe waited for its timeout.
  assert message.startswith(
      f"TFDS dataset 'cifar10' is not in data_dir '{data_dir}' and could not "
      'be downloaded (www.cs.toronto.edu:443 cannot be reached (gaierror: ')
  assert re.search(ADVICE, message), message
  assert not data_dir.exists()


def test_a_silent_network_is_given_up_after_the_timeout(monkeypatch):
  def silent(address, timeout=None, *args, **kwargs):
    time.sleep(30)  # a packet filter that drops everything
  monkeypatch.setattr(socket, 'create_connection', silent)
  start = time.monotonic()
  why = tfds_download.unreachable([('example.org', 443)], timeout=0.3)
  # Not the 30 s of the silent connection (a bound no loaded machine nears).
  assert time.monotonic() - start < 15
  assert why == 'example.org:443 cannot be reached (no answer within 0.3 s)'


def test_one_host_answering_is_enough(monkeypatch):
  class Connection:
    def close(self):
      pass

  def only_b(address, *args, **kwargs):
    if address[0] != 'b.example':
      raise ConnectionRefusedError(111, 'Connection refused')
    return Connection()
  monkeypatch.setattr(socket, 'create_connection', only_b)
  assert tfds_download.unreachable([('a.example', 443),
                                    ('b.example', 80)]) is None
  assert tfds_download.unreachable([('a.example', 443)]) == (
      'a.example:443 cannot be reached (ConnectionRefusedError: [Errno 111] '
      'Connection refused)')


def test_download_hosts_are_the_datasets_or_the_proxy(tmp_path, monkeypatch):
  for key in ('HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy',
              'NO_PROXY', 'no_proxy'):
    monkeypatch.delenv(key, raising=False)
  cifar = tfds.builder('cifar10', data_dir=str(tmp_path))
  mnist = tfds.builder('mnist', data_dir=str(tmp_path))
  assert tfds_download.download_hosts(cifar) == [('www.cs.toronto.edu', 443)]
  assert tfds_download.download_hosts(mnist) == [('storage.googleapis.com',
                                                  443)]
  monkeypatch.setenv('HTTPS_PROXY', 'http://proxy.internal:3128')
  assert tfds_download.download_hosts(cifar) == [('proxy.internal', 3128)]
  assert not os.listdir(tmp_path)  # building a builder writes nothing


@pytest.mark.parametrize('there_before', [False, True])
def test_a_download_failing_midway_removes_only_what_it_created(
    tmp_path, monkeypatch, there_before):
  def fails_midway(self, *args, **kwargs):
    # What TFDS leaves when the connection drops during a download (it
    # removes its own <version>.incomplete folder).
    os.makedirs(os.path.join(self.data_dir_root, 'downloads', 'part'))
    os.makedirs(os.path.dirname(self.data_dir), exist_ok=True)
    raise ConnectionResetError(104, 'Connection reset by peer')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                      fails_midway)  # (so the probe, for TFDS's own, is skipped)
  data_dir = tmp_path / 'tfds'
  if there_before:
    (data_dir / 'mnist').mkdir(parents=True)
    (data_dir / 'mnist' / 'notes.txt').write_text('keep me')
  config = helpers.small_config('mnist', data_dir=str(data_dir))
  with pytest.raises(UserError, match=r"'mnist' is not in data_dir .*tfds.*"
                     r'\(ConnectionResetError: \[Errno 104\] Connection reset '
                     r'by peer\)\. ' + ADVICE):
    helpers.train_in(config, tmp_path / 'run')
  if there_before:  # downloads/ removed, the dataset's folder kept
    assert sorted(os.listdir(data_dir)) == ['mnist']
    assert (data_dir / 'mnist' / 'notes.txt').read_text() == 'keep me'
  else:
    assert not data_dir.exists()
