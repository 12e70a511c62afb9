import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE = ('import sys; sys.path.insert(0, %r); import main; '
        'print(main.tune_malloc())' % ROOT)


def _run(**env):
  return subprocess.run([sys.executable, '-c', CODE], capture_output=True,
                        text=True, check=True,
                        env=dict(os.environ, **env)).stdout.strip()


def test_glibc_accepts_the_settings_and_the_switch_turns_them_off():
  assert _run() == 'True'  # these machines run glibc
  assert _run(IMGCLF_JAX_TUNE_MALLOC='0') == 'False'
