"""Start-up time to the first training step and peak RSS of one main.py run
(README, "Large datasets").

    python -m benchmarks.startup make-linked OUT [--copies=4]
    python -m benchmarks.startup make-generated OUT [--per_class=2000]
    python -m benchmarks.startup measure -- [main.py flags...]

make-linked: an image folder OUT/train/<class>/ of symbolic links to the
CIFAR-10 JPEGs of ../shared/datasets/cifar10-jpeg, each `--copies` times
(4: 200,000 images). make-generated: 10 classes of `--per_class` 500 x 375
JPEGs (quality 90; smooth random colour fields plus noise, seed 0).

measure: runs `/usr/bin/time -v python main.py FLAGS --config.log_every_steps=1`
from the repository root, waits for the log line of training step 1, kills
the run there and prints the seconds from launch to that line and the
maximum resident set size that `time` reports (the whole process tree's
largest process). The command of the README's table:

    python -m benchmarks.startup measure -- --config=configs/folder.py \\
      --config.dataset=folder:OUT --workdir=/tmp/w --config.num_epochs=1
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR = os.path.join(ROOT, '..', 'shared', 'datasets', 'cifar10-jpeg', 'train')


def make_linked(out: str, copies: int):
  """OUT/train/<class>/<copy>_<name> -> the CIFAR-10 JPEG, `copies` times."""
  if not os.path.isdir(CIFAR):
    sys.exit(f'{CIFAR} not found: make-linked needs the CIFAR-10 JPEG folder.')
  for name in sorted(os.listdir(CIFAR)):
    folder = os.path.join(out, 'train', name)
    os.makedirs(folder, exist_ok=True)
    for file in sorted(os.listdir(os.path.join(CIFAR, name))):
      for copy in range(copies):
        os.symlink(os.path.realpath(os.path.join(CIFAR, name, file)),
                   os.path.join(folder, f'{chr(ord("a") + copy)}_{file}'))


def make_generated(out: str, per_class: int):
  """10 classes of `per_class` 500 x 375 JPEGs of quality 90."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for c in range(10):
    folder = os.path.join(out, 'train', f'class_{c}')
    os.makedirs(folder, exist_ok=True)
    for i in range(per_class):
      low = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
      image = np.asarray(Image.fromarray(low).resize((500, 375),
                                                     Image.BICUBIC), np.int16)
      image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255)
      Image.fromarray(image.astype(np.uint8)).save(
          os.path.join(folder, f'{i:04d}.jpg'), quality=90)


def measure(flags: list) -> tuple:
  """(seconds to the step-1 log line or None, peak RSS in bytes or None)."""
  env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS='0', TF_CPP_MIN_LOG_LEVEL='2')
  with tempfile.NamedTemporaryFile('w+', suffix='.log') as log:
    start = time.time()
    proc = subprocess.Popen(
        ['/usr/bin/time', '-v', sys.executable, 'main.py', *flags,
         '--config.log_every_steps=1'],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    first = None
    while proc.poll() is None:
      time.sleep(0.2)
      with open(log.name) as f:
        if re.search(r'step 1/\d+', f.read()):
          first = time.time() - start
          break
    if proc.poll() is None:  # kill python, not time: time reports its RSS
      children = subprocess.run(['pgrep', '-P', str(proc.pid)],
                                capture_output=True, text=True).stdout.split()
      for pid in children:
        os.kill(int(pid), signal.SIGKILL)
    proc.wait()
    with open(log.name) as f:
      text = f.read()
  rss = re.search(r'Maximum resident set size \(kbytes\): (\d+)', text)
  if first is None:
    print(text[-3000:], file=sys.stderr)
  return first, int(rss.group(1)) * 1000 if rss else None


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  sub = parser.add_subparsers(dest='command', required=True)
  linked = sub.add_parser('make-linked')
  linked.add_argument('out')
  linked.add_argument('--copies', type=int, default=4)
  generated = sub.add_parser('make-generated')
  generated.add_argument('out')
  generated.add_argument('--per_class', type=int, default=2000)
  run = sub.add_parser('measure')
  run.add_argument('flags', nargs=argparse.REMAINDER)
  args = parser.parse_args()
  if args.command == 'make-linked':
    make_linked(args.out, args.copies)
  elif args.command == 'make-generated':
    make_generated(args.out, args.per_class)
  else:
    flags = [f for f in args.flags if f != '--']
    first, rss = measure(flags)
    print('first step after', 'no step line' if first is None else
          f'{first:.1f} s', '| peak RSS',
          'unknown' if rss is None else f'{rss / 1e9:.2f} GB')
    sys.exit(0 if first is not None else 1)


if __name__ == '__main__':
  main()
