"""How well the train step uses the CPU's cores: in one process, or one process per core.

    python benchmarks/cores.py

Prints the milliseconds per step of 128 images (the trainer's step, the
harness's `jax_setup`, synthetic batch), measured three ways on this machine:

  in-process   one process, the trainer's default step (2 slices of 64 on
               CPU), all cores;
  independent  one process per core (each pinned to its core), run at the
               same time, each a 64-image step with no communication: the
               time two cores take for 128 images when nothing is shared;
  gloo         the same two pinned processes as one data-parallel job
               (jax.distributed, gloo CPU collectives): each a 64-image half
               of the 128 batch, gradients averaged across the processes.

Each figure is the median of 7 timings of 10 steps. Needs 2 cores (uses the
first two).
"""

import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = 12355


def _child(mode: str, rank: int):
  os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[rank]})
  sys.path.insert(0, ROOT)
  from benchmarks import run  # pylint: disable=g-import-not-at-top  (tunes malloc)
  import jax  # pylint: disable=g-import-not-at-top
  if mode == 'gloo':
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(f'localhost:{PORT}', num_processes=2,
                               process_id=rank)
  run.OVERRIDES['train_step_slices'] = 1
  print(_median_step_ms(run, 64))


def _median_step_ms(run, batch_size):
  setup = run.jax_setup(batch_size)
  run.time_jax_train(setup, 3)
  return statistics.median(run.time_jax_train(setup, 10) / 10 * 1e3
                           for _ in range(7))


def _pair(mode: str) -> float:
  """The slower of the two pinned processes' step times."""
  procs = [subprocess.Popen([sys.executable, __file__, mode, str(rank)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for rank in (0, 1)]
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
  sys.path.insert(0, ROOT)
  from benchmarks import run  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  print(f'{jax.devices()[0].device_kind}, {os.cpu_count()} CPUs; ms per step '
        'of 128 images')
  print(f'  in-process (default step, all cores)  '
        f'{_median_step_ms(run, 128):6.1f}', flush=True)
  print(f'  independent, 2 x 64, one per core     {_pair("independent"):6.1f}',
        flush=True)
  print(f'  gloo data-parallel, 2 x 64             {_pair("gloo"):6.1f}')


if __name__ == '__main__':
  if len(sys.argv) == 3:
    _child(sys.argv[1], int(sys.argv[2]))
  else:
    start = time.perf_counter()
    main()
    print(f'({time.perf_counter() - start:.0f} s)')
