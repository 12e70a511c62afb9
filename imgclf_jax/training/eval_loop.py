"""The pass over a split that training's validation and --mode=eval share."""

import functools

from imgclf_jax.parallel import device_axis
from imgclf_jax.training import metrics as metrics_lib
from imgclf_jax.training import preemption
from imgclf_jax.training import steps


def evaluate_split(state, batches, devices=None, tta: str = 'none',
                   padding=None):
  """Loss and accuracy (a metrics.Metrics) over every example of the global
  `batches` (InputPipeline.eval_batches), accumulated on `devices` (default:
  all local devices), of the logits averaged over `tta`'s views
  (tta.tta_views). With several processes, `batches` and `padding` are
  InputPipeline.eval_share's, and the metrics are summed over all of them."""
  p_step = _pmapped(steps.eval_step, device_axis.REDUCED, _key(devices), tta)
  total = metrics_lib.Accumulator()
  for batch_metrics in _eval_pass(p_step, state, batches, devices, padding):
    total.add(batch_metrics)
  return total.result()


def evaluate_split_with_outputs(state, batches, devices=None,
                                tta: str = 'none', padding=None):
  """(metrics, per-example outputs) over every example of `batches`.

  The outputs (steps.eval_outputs_step's: probs [N, K], predicted,
  confidence and label [N], in the split's order) stay on the devices until
  the pass ends. With several processes, `batches` and `padding` are
  InputPipeline.eval_share's and the outputs this process's share's
  (distributed.gather_examples joins them).
  """
  p_step = _pmapped(steps.eval_outputs_step,
                    (device_axis.REDUCED, device_axis.PER_EXAMPLE),
                    _key(devices), tta)
  total, pieces = metrics_lib.Accumulator(), []
  for batch_metrics, outputs in _eval_pass(p_step, state, batches, devices,
                                          padding):
    total.add(batch_metrics)
    pieces.append(outputs)
  return total.result(), device_axis.real_examples(pieces)


def _eval_pass(p_step, state, batches, devices, padding=None):
  """p_step's output for each of `batches`, padded, sharded and prefetched."""
  devices = device_axis.local_devices(devices)
  padded = device_axis.pad_batches(batches, len(devices), padding)
  for batch in device_axis.to_devices(padded, devices):
    preemption.raise_if_swallowed()  # --mode=eval: a stop lost in start-up
    yield p_step(state, batch)


def _key(devices):
  return None if devices is None else tuple(devices)


# Bounded: each entry holds a compiled step (and its model) alive.
@functools.lru_cache(maxsize=16)
def _pmapped(step_fn, out_axes, devices, tta):
  """One pmapped (and so one compiled) step per step, outputs, devices and
  test-time augmentation."""
  return device_axis.pmap_step(functools.partial(step_fn, tta=tta),
                               out_axes=out_axes, devices=devices)
