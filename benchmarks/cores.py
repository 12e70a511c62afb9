"""How well the train step uses the CPU's cores: in one process, or one process per core.

    python -m benchmarks.cores

Prints the milliseconds per step of 128 images (the trainer's step,
`benchmarks.common.jax_setup`, synthetic batch), measured three ways on this
machine:

  in-process   one process, the trainer's default step (2 microbatches of
               64 on CPU), all cores;
  independent  one process per core (each pinned to its core), run at the
               same time, each a 64-image step with no communication: the
               time two cores take for 128 images when nothing is shared;
  gloo         the same two pinned processes as one data-parallel job
               (jax.distributed, gloo CPU collectives): each a 64-image half
               of the 128 batch, gradients averaged across the processes.

Each figure is the median of 7 timings of 10 steps. Needs 2 cores (uses the
first two). The pinned processes are this script again, as
`python -m benchmarks.cores --child=independent|gloo --rank=0|1`.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ''):  # python benchmarks/cores.py
  sys.path.insert(0, ROOT)
PORT = 12355
MODES = ('independent', 'gloo')


def _child(mode: str, rank: int):
  # Pinned before JAX starts (benchmarks.common imports it): XLA's threads
  # are created on this core.
  os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[rank]})
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  common.tune_malloc()
  import jax  # pylint: disable=g-import-not-at-top
  if mode == 'gloo':
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(f'localhost:{PORT}', num_processes=2,
                               process_id=rank)
  print(_median_step_ms(common, 64, {'microbatches': 1}))


def _median_step_ms(common, batch_size, overrides=None):
  setup = common.jax_setup(batch_size, overrides)
  common.time_jax_train(setup, 3)
  return statistics.median(common.time_jax_train(setup, 10) / 10 * 1e3
                           for _ in range(7))


def _pair(mode: str) -> float:
  """The slower of the two pinned processes' step times."""
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'benchmarks.cores', f'--child={mode}',
       f'--rank={rank}'], cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
  times = []
  for proc in procs:
    out, err = proc.communicate()
    if proc.returncode:
      raise RuntimeError(f'{mode} process failed:\n{err[-2000:]}')
    times.append(float(out.strip().splitlines()[-1]))
  return max(times)


def main():
  if len(os.sched_getaffinity(0)) < 2:
    sys.exit('benchmarks/cores.py needs at least 2 cores')
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  common.tune_malloc()
  import jax  # pylint: disable=g-import-not-at-top
  print(f'{jax.devices()[0].device_kind}, {os.cpu_count()} CPUs; ms per step '
        'of 128 images')
  print(f'  in-process (default step, all cores)  '
        f'{_median_step_ms(common, 128):6.1f}', flush=True)
  print(f'  independent, 2 x 64, one per core     {_pair("independent"):6.1f}',
        flush=True)
  print(f'  gloo data-parallel, 2 x 64             {_pair("gloo"):6.1f}')


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--child', choices=MODES,
                      help='one of the two pinned processes (started by the '
                      'script itself)')
  parser.add_argument('--rank', type=int, default=0)
  args = parser.parse_args()
  if args.child:
    _child(args.child, args.rank)
  else:
    start = time.perf_counter()
    main()
    print(f'({time.perf_counter() - start:.0f} s)')
