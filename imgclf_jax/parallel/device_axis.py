"""The pmap device axis, in one place: the boundary between global batches
and the pmapped steps.

The data layer (input_pipeline.py, device_data.py, predict.py) yields global
batches, dicts of arrays [B, ...]. Here, and nowhere else, they become
[devices, B / devices, ...] for `jax.pmap` (`shard`), a last partial batch is
padded to the size of the others with a `mask` of 0 (`pad_batches`), and
per-example outputs come back as [B, ...] without the padding
(`real_examples`). `pmap_step` is the one factory of the pmapped steps: the
state is broadcast to every device (in_axes None), the batch split over them
(0), and outputs come back reduced (None: identical on every device, after
the step's psum/pmean) or per example (0).
"""

from typing import Iterable, Iterator

from flax import jax_utils
import jax
import numpy as np

AXIS = 'batch'          # the pmap axis name the steps reduce over
REDUCED = None          # out_axes of an output that is the same on every device
PER_EXAMPLE = 0         # out_axes of an output with one row per example
PREFETCH = 2            # batches put on the devices ahead of the step


def pmap_step(step_fn, in_axes=(None, 0), out_axes=REDUCED, devices=None):
  """`step_fn(state, batch, ...)` pmapped over `devices` (default: all local
  devices) with AXIS as its axis name. With several processes, over every
  device of every process (each process passes its local devices' shares;
  AXIS's collectives span all of them), whatever `devices` says."""
  if jax.process_count() > 1:
    devices = None
  return jax.pmap(step_fn, axis_name=AXIS, in_axes=in_axes, out_axes=out_axes,
                  devices=devices)


def replicated(tree, devices=None):
  """`tree` (a state for pmap_step's in_axes None) placed as the steps
  return their REDUCED outputs: a copy on every one of `devices` (default:
  all local devices), sharded over a mesh of them with AXIS. A step compiles
  a program per placement of its inputs: a state fed back from a step then
  runs the program of its first call, not one more of its own. With several
  processes `tree` is returned as it is (their mesh spans every process)."""
  if jax.process_count() > 1:
    return tree
  mesh = jax.sharding.Mesh(np.array(local_devices(devices)), (AXIS,),
                           axis_types=(jax.sharding.AxisType.Auto,))
  return jax.device_put(tree, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec()))


def local_devices(devices=None) -> list:
  return list(devices) if devices is not None else jax.local_devices()


def shard(batch, num_devices: int):
  """Every array [B, ...] of `batch` (any pytree) as [num_devices, B / D, ...]."""
  def split(x):
    if x.shape[0] % num_devices:
      raise ValueError(f'a batch of {x.shape[0]} does not split over '
                       f'{num_devices} devices')
    return x.reshape(num_devices, -1, *x.shape[1:])
  return jax.tree.map(split, batch)


def unshard(tree):
  """shard's inverse: every array [D, B / D, ...] as [B, ...] (on the host)."""
  return jax.tree.map(
      lambda x: np.asarray(x).reshape(-1, *x.shape[2:]), tree)


def to_devices(batches: Iterable, devices=None) -> Iterator:
  """Global batches, sharded over `devices` and put there PREFETCH ahead."""
  devices = local_devices(devices)
  sharded = (shard(batch, len(devices)) for batch in batches)
  return jax_utils.prefetch_to_device(sharded, PREFETCH, devices)


def pad_batches(batches: Iterable[dict], num_devices: int,
                padding=None) -> Iterator[dict]:
  """Each batch with a float32 `mask` (1: a real example, 0: padding), padded
  with zeros to the first batch's size rounded up to a multiple of
  `num_devices`: one shape for every batch (one compilation of the step), and
  every example seen exactly once.

  `padding`: None, or (num_batches, batch size) of a process's share of a
  split on several processes (InputPipeline.eval_share): every batch padded
  to that size (rounded up likewise) and all-padding batches added up to
  num_batches, so that every process runs the same steps.
  """
  size, count, template = None, 0, None
  if padding is not None:
    size = -(-padding[1] // num_devices) * num_devices
  for batch in batches:
    n = len(next(iter(batch.values())))
    if size is None:
      size = -(-n // num_devices) * num_devices
    if n > size:
      raise ValueError(f'a batch of {n} after a first batch of {size}')
    missing = size - n
    padded = {k: np.concatenate([v, np.zeros((missing, *v.shape[1:]),
                                             v.dtype)]) if missing else v
              for k, v in batch.items()}
    padded['mask'] = (np.arange(size) < n).astype(np.float32)
    count, template = count + 1, padded
    yield padded
  if padding is not None and count < padding[0]:
    if template is None:
      raise ValueError('a process share without a batch to pad after')
    empty = {k: np.zeros_like(v) for k, v in template.items()}
    for _ in range(padding[0] - count):
      yield empty


def real_examples(per_batch_outputs: list) -> dict:
  """Per-example outputs of the batches of `pad_batches`, each a dict of
  [D, B / D, ...] arrays holding its `mask`, as one [N, ...] array per key
  over the real examples, in order (padding dropped)."""
  host = [unshard(outputs) for outputs in per_batch_outputs]
  joined = {k: np.concatenate([h[k] for h in host]) for k in host[0]}
  keep = joined.pop('mask') > 0
  return {k: v[keep] for k, v in joined.items()}
