"""The suite as the README runs it (`python -m pytest`, pytest.ini's
options): a long run says where it is as it goes."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_each_test_is_named_as_it_ends_with_the_share_done():
  test = 'tests/training/test_progress.py::test_epoch_line_and_seconds'
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('PYTEST_', 'PYTHONBREAKPOINT'))}
  done = subprocess.run([sys.executable, '-m', 'pytest', '-p',
                         'no:cacheprovider', test], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  lines = done.stdout.splitlines()
  # xdist's workers (pytest.ini's -n 2), a line per test as it ends, and
  # the slowest tests at the end.
  assert any(re.fullmatch(r'created: 2/2 workers?', l.strip()) for l in lines)
  assert any(re.fullmatch(rf'\[gw\d\] \[100%\] PASSED {re.escape(test)}\s*', l)
             for l in lines), done.stdout[-3000:]
  assert any('slowest 15 durations' in l for l in lines), done.stdout[-3000:]
