"""Several processes, one training: JAX's distributed runtime.

Launched as several processes (a TPU pod slice's hosts, SLURM tasks, GPU
nodes, or processes on one machine), imgclf_jax joins them with
`jax.distributed.initialize` before any JAX computation (`initialize`).
Then `jax.pmap` spans every device of every process: each process feeds its
local devices and the steps' collectives (gradient means, BatchNorm
statistics, metric sums) run over all of them.

What each process does (the rest of the program asks `is_primary`):
  * data: its share of each global batch (input_pipeline.py, device_data.py)
    and of each evaluation split;
  * writes: process 0 alone writes metrics.jsonl, TensorBoard events, plots,
    reports and predictions, and holds the workdir's training lock; every
    process takes part in Orbax's checkpoint saves and restores (Orbax writes
    each array once);
  * the workdir must be the same folder for every process: a shared or
    network filesystem (NFS, Filestore, a bucket mounted with gcsfuse).
    `check_shared_workdir` refuses one that is not. Object-store URLs
    (gs://) are not supported.

When a process dies (kill -9, a crash, an out-of-memory kill) during a
step, the others' collective fails at once (its connections are reset).
`exit_if_peer_lost` (dispatch.py calls it on any error) turns that into one
`error:` line naming the lost process (with two processes, the other one;
with more, the others' logs tell which ended without such a line) and what a
restart does, and exit status 2, at once: not through JAX's exit handler,
whose shutdown barrier would wait for the lost process until the
coordinator's heartbeat timeout and then abort. (JAX's key-value store is
not asked which process is gone: a call to it can hang, holding Python's
lock, once a process has died.)
JAX's coordinator alone can tell the others when a process dies while they
wait in a checkpoint save (Orbax's barriers are the coordinator's), or when
a machine vanishes without closing its connections: it declares the process
dead after HEARTBEAT_TIMEOUT_SECONDS and ends the others with its own
fatal-error message (exit status 134, or this module's line and 2 where the
failed barrier gets there first). When process 0, which runs the
coordinator, dies, the others' JAX client ends them at once the same way.

One process (the default) needs none of this. JAX is imported in the
functions: the command line defines its flags from MODES without it.
"""

import os
import secrets
import sys

from absl import logging
import numpy as np

from imgclf_jax.errors import UserError

MODES = ('auto', 'on', 'off')

# jax.distributed's heartbeat timeout: the coordinator declares a process
# whose heartbeats stopped this long dead and ends the others. JAX's default,
# kept: it bounds the one case exit_if_peer_lost cannot see (a machine gone
# without closing its connections), and a shorter one would end a run whose
# process is only slow to send (a loaded or swapping machine).
HEARTBEAT_TIMEOUT_SECONDS = 100

# Words of a collective's error when a peer process is gone (gloo on CPU,
# NCCL on GPU, the gRPC of JAX's coordinator), rather than a bug.
_LOST_PEER_SIGNS = ('Connection reset by peer', 'Connection closed by peer',
                    'Broken pipe', 'Socket closed', 'remote process exited',
                    'UNAVAILABLE')


def launched_as_several(environ=None) -> bool:
  """Whether the environment says this is one of several processes: SLURM
  tasks of an `srun` with more than one task, or Open MPI's `mpirun -n` with
  more than one."""
  env = os.environ if environ is None else environ
  slurm = env.get('SLURM_STEP_ID') is not None and _count(env, 'SLURM_NTASKS')
  return slurm > 1 or _count(env, 'OMPI_COMM_WORLD_SIZE') > 1


def _count(env, name) -> int:
  try:
    return int(env.get(name, '0'))
  except ValueError:
    return 0


def initialize(mode: str = 'auto', coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Joins the processes of the run with jax.distributed.initialize;
  returns whether it did.

  mode 'on': always, with the given values, JAX detecting the missing ones
  (Cloud TPU, SLURM, Open MPI, Kubernetes); 'auto': when a value is given
  or `launched_as_several`; 'off': never. On CPU the collectives between
  processes are gloo's.
  """
  import jax  # pylint: disable=g-import-not-at-top
  given = {'coordinator_address': coordinator_address,
           'num_processes': num_processes, 'process_id': process_id}
  given = {k: v for k, v in given.items() if v is not None}
  if mode not in MODES:
    raise UserError(f'--distributed={mode}: use one of {", ".join(MODES)}.')
  if mode == 'off' or (mode == 'auto' and not given and
                       not launched_as_several()):
    if mode == 'off' and given:
      raise UserError(f'--distributed=off with --{", --".join(given)}: drop '
                      'them, or use --distributed=on.')
    return False
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  try:
    jax.distributed.initialize(
        **given, heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_SECONDS)
  except (ValueError, RuntimeError) as e:
    flags_given = ' '.join(f'--{k}={v}' for k, v in given.items()) or 'none'
    raise UserError(
        f'jax.distributed.initialize failed ({" ".join(str(e).split())}); '
        f'flags given: {flags_given}. Outside a cluster JAX detects (Cloud '
        'TPU, SLURM, Open MPI, Kubernetes) give every process the same '
        '--coordinator_address=HOST:PORT (process 0\'s host) and '
        '--num_processes, and its own --process_id.') from None
  logging.info('Process %d of %d: %d local of %d devices.',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  return True


def exit_if_peer_lost(error: BaseException, advice):
  """With several processes, where `error` (or one it came from) says a
  peer process is gone: prints one `error:` line naming the lost process
  and `advice()` (what a restart does), and ends this process with status 2
  at once. Returns (the caller re-raises) for any other error."""
  if not several() or not _peer_gone(error):
    return
  import jax  # pylint: disable=g-import-not-at-top
  me, count = jax.process_index(), jax.process_count()
  others = [p for p in range(count) if p != me]
  who = (f'process {others[0]} of 2' if count == 2 else
         f'one of processes {", ".join(map(str, others))} of {count} (its '
         'log ends without a line like this one)')
  logging.flush()
  print(f'error: {who} stopped answering (killed, crashed, or its machine '
        f'or network went down), so this run cannot go on: process {me} '
        f'stopped too. {advice()}', file=sys.stderr, flush=True)
  sys.stdout.flush()
  # Not sys.exit: JAX's exit handler would wait in its shutdown barrier for
  # the lost process (until HEARTBEAT_TIMEOUT_SECONDS), then abort.
  os._exit(2)  # pylint: disable=protected-access


def _peer_gone(error) -> bool:
  while error is not None:
    if any(sign in str(error) for sign in _LOST_PEER_SIGNS):
      return True
    error = error.__cause__ or error.__context__
  return False


def is_primary() -> bool:
  """Whether this process writes the run's files (process 0)."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index() == 0


def several() -> bool:
  """Whether this run has more than one process."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_count() > 1


def process_slice(size: int) -> slice:
  """This process's rows of a global batch of `size` (divisible by the
  number of processes): its local devices' share, in device order."""
  import jax  # pylint: disable=g-import-not-at-top
  per_process = size // jax.process_count()
  start = jax.process_index() * per_process
  return slice(start, start + per_process)


def gather_examples(outputs: dict) -> dict:
  """Per-example outputs (dicts of [n_p, ...] arrays, n_p this process's
  share of a split) joined in process order on every process: the split's
  order for contiguous shares (InputPipeline.eval_share). One process: as
  they are."""
  if not several():
    return outputs
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  n = len(next(iter(outputs.values())))
  sizes = multihost_utils.process_allgather(np.asarray(n, np.int64))
  most = int(sizes.max())
  padded = {k: np.concatenate([v, np.zeros((most - n, *v.shape[1:]),
                                           v.dtype)])
            for k, v in outputs.items()}
  gathered = multihost_utils.process_allgather(padded)  # [processes, most]
  return {k: np.concatenate([v[p, :int(size)] for p, size in
                             enumerate(sizes)])
          for k, v in gathered.items()}


def check_shared_workdir(workdir: str):
  """Refuses a workdir that is not the same folder on every process: process
  0 writes a token file there; every other process must read it."""
  if not several():
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, '.imgclf_jax_shared_check')
  token = secrets.token_hex(8) if is_primary() else ''
  if is_primary():
    os.makedirs(workdir, exist_ok=True)
    with open(path, 'w') as f:
      f.write(token)
  token = _broadcast_text(token, 16)
  multihost_utils.sync_global_devices('imgclf_jax.shared_workdir_written')
  try:
    with open(path) as f:
      seen = f.read()
  except OSError:
    seen = None
  ok = multihost_utils.process_allgather(
      np.asarray(int(seen == token)))
  multihost_utils.sync_global_devices('imgclf_jax.shared_workdir_read')
  if is_primary():
    os.remove(path)
  if not ok.all():
    missing = [int(i) for i in (ok == 0).nonzero()[0]]
    raise UserError(
        f'--workdir={workdir} is not one shared folder: processes {missing} '
        "do not see process 0's files there. Give every process the same "
        'folder on a shared filesystem (NFS, Filestore, a gcsfuse mount).')


def _broadcast_text(text: str, length: int) -> str:
  """Process 0's `text` (at most `length` ASCII characters) on every
  process."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  codes = [ord(c) for c in text.ljust(length)]
  got = multihost_utils.broadcast_one_to_all(np.asarray(codes, np.int32))
  return ''.join(chr(int(c)) for c in got).rstrip()
