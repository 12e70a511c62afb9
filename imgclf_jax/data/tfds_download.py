"""Preparing a TFDS dataset that is not yet in its data_dir.

Before TFDS downloads anything, a quick probe (a TCP connection with a short
timeout) checks that one of the dataset's download hosts, or the proxy that
reaches them, answers. Offline, that fails in seconds with the advice of
`UNAVAILABLE_ADVICE`, where TFDS itself would retry for minutes before
failing. Folders that a failed preparation created are removed again;
nothing that was there before is touched.
"""

import contextlib
import logging as pylogging
import os
import queue
import shutil
import socket
import threading
import time
import urllib.parse
import urllib.request

from absl import logging
import tensorflow_datasets as tfds

from imgclf_jax.errors import UserError

# Seconds the probe waits for any host to answer (DNS included).
PROBE_TIMEOUT = 5.0
# Where TFDS looks first for prepared data (try_download_gcs), and the host
# probed for a dataset whose download URLs are not listed.
TFDS_GCS_HOST = 'storage.googleapis.com'

# TFDS's own download_and_prepare, as imported.
_TFDS_DOWNLOAD_AND_PREPARE = tfds.core.DatasetBuilder.__dict__[
    'download_and_prepare']

UNAVAILABLE_ADVICE = (
    'On a machine with internet run tfds.builder(name).download_and_prepare() '
    'and pass its data_dir with --config.data_dir=/path, or use '
    '--config.dataset=folder:/path/to/images.')


def download_hosts(builder) -> list[tuple[str, int]]:
  """(host, port) of the dataset's download URLs (its checksums file), or
  TFDS's storage host when the builder lists none; through the proxy of the
  environment (HTTPS_PROXY, HTTP_PROXY) where one is set."""
  urls = sorted(getattr(builder, 'url_infos', None) or {}) or [
      f'https://{TFDS_GCS_HOST}/']
  proxies = urllib.request.getproxies()
  hosts = []
  for url in urls:
    parsed = urllib.parse.urlsplit(url)
    proxy = proxies.get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(parsed.hostname or ''):
      parsed = urllib.parse.urlsplit(proxy if '://' in proxy else
                                     'http://' + proxy)
    port = parsed.port or (443 if parsed.scheme == 'https' else 80)
    if parsed.hostname and (parsed.hostname, port) not in hosts:
      hosts.append((parsed.hostname, port))
  return hosts


def _connect(address, answers):
  try:
    socket.create_connection(address, timeout=PROBE_TIMEOUT).close()
    answers.put((address, None))
  except Exception as e:  # pylint: disable=broad-except
    answers.put((address, e))


def unreachable(hosts, timeout: float = PROBE_TIMEOUT):
  """None if one of `hosts` accepts a connection within `timeout` seconds,
  else why not (the first host's error). The probes run in daemon threads,
  so a name lookup that hangs delays neither the answer nor the exit."""
  answers = queue.Queue()
  for address in hosts:
    threading.Thread(target=_connect, args=(address, answers),
                     daemon=True).start()
  errors, deadline = {}, time.monotonic() + timeout
  while len(errors) < len(hosts):
    try:
      address, error = answers.get(
          timeout=max(0.0, deadline - time.monotonic()))
    except queue.Empty:
      break
    if error is None:
      return None
    errors[address] = error
  host, port = hosts[0]
  error = errors.get(hosts[0])
  why = f'{type(error).__name__}: {error}' if error else (
      f'no answer within {timeout:g} s')
  return f'{host}:{port} cannot be reached ({why})'


def is_prepared(builder) -> bool:
  """builder.is_prepared(), without TFDS's warning that the dataset's
  version folder 'has no dataset_info.json': tfds.builder made that folder
  for a dataset not prepared yet (which `prepare` then prepares, or removes
  where it cannot)."""
  with _without(lambda record: str(record.msg).startswith('Variant folder ')
                and 'has no' in str(record.msg)):
    return builder.is_prepared()


@contextlib.contextmanager
def _without(dropped):
  """absl's log records for which `dropped(record)` holds are not shown."""
  class Drop(pylogging.Filter):
    def filter(self, record):
      return not dropped(record)
  drop, logger = Drop(), logging.get_absl_logger()
  logger.addFilter(drop)
  try:
    yield
  finally:
    logger.removeFilter(drop)


def prepare(builder, name: str):
  """Downloads and prepares `builder`'s dataset into its data_dir, or
  raises UserError in seconds when its download hosts cannot be reached.
  On failure, removes the folders this call created."""
  root = os.fspath(builder.data_dir_root)
  created = [p for p in (root, os.path.join(root, name),
                         os.path.join(root, 'downloads'))
             if not os.path.lexists(p)]
  where = (f'TFDS dataset {name!r} is not in data_dir {root!r} and could not '
           'be downloaded')
  if _downloads(builder):
    why = unreachable(download_hosts(builder))
    if why:
      raise UserError(f'{where} ({why}). {UNAVAILABLE_ADVICE}')
  logging.info('TFDS dataset %s is not in %s: downloading and preparing it.',
               name, root)
  try:
    builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except
    _remove(created)
    raise UserError(f'{where} ({type(e).__name__}: {e}). '
                    f'{UNAVAILABLE_ADVICE}') from None
  except BaseException:  # Ctrl-C during a download
    _remove(created)
    raise


def _downloads(builder) -> bool:
  """Whether builder.download_and_prepare is TFDS's own, which downloads
  (tfds.testing.mock_data puts a no-op in its place: nothing to probe)."""
  return _attribute(type(builder), 'download_and_prepare') is (
      _TFDS_DOWNLOAD_AND_PREPARE)


def _attribute(cls, name: str):
  """`name` as defined on `cls` or its bases, not bound (TFDS wraps its
  methods in wrappers that are new objects at every access)."""
  return next(k.__dict__[name] for k in cls.__mro__ if name in k.__dict__)


def _remove(paths):
  """Removes the folders in `paths` that exist now (parents first)."""
  for path in paths:
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
      logging.info('Removed %s (created by the failed download).', path)
