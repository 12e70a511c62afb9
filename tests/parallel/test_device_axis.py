"""The step boundary: global batches split over devices, padded, un-padded."""

import jax
import numpy as np
import pytest

from imgclf_jax.parallel import device_axis


def _batches(sizes, classes=3):
  start = 0
  for n in sizes:
    ids = np.arange(start, start + n)
    yield {'image': ids[:, None].astype(np.float32) * np.ones((n, 2)),
           'label': np.eye(classes, dtype=np.float32)[ids % classes]}
    start += n


def test_shard_and_unshard_are_inverse_reshapes():
  batch = next(_batches([8]))
  sharded = device_axis.shard(batch, 4)
  assert sharded['image'].shape == (4, 2, 2)
  assert sharded['label'].shape == (4, 2, 3)
  # Device d holds examples 2d and 2d + 1, in order.
  np.testing.assert_array_equal(sharded['image'][1, :, 0], [2, 3])
  back = device_axis.unshard(sharded)
  for key in batch:
    np.testing.assert_array_equal(back[key], batch[key])
  with pytest.raises(ValueError, match='a batch of 6 does not split over 4'):
    device_axis.shard(next(_batches([6])), 4)


def test_pad_batches_pads_the_last_to_the_first_and_masks_the_padding():
  padded = list(device_axis.pad_batches(_batches([8, 8, 1]), 4))
  assert [len(b['mask']) for b in padded] == [8, 8, 8]
  assert [int(b['mask'].sum()) for b in padded] == [8, 8, 1]
  last = padded[-1]
  assert last['mask'].tolist() == [1] + [0] * 7
  assert not last['image'][1:].any() and not last['label'][1:].any()
  # A first batch that does not divide by the devices is rounded up.
  odd = list(device_axis.pad_batches(_batches([6, 3]), 4))
  assert [len(b['mask']) for b in odd] == [8, 8]
  assert [int(b['mask'].sum()) for b in odd] == [6, 3]


def test_real_examples_drops_the_padding_in_order():
  padded = list(device_axis.pad_batches(_batches([8, 8, 1]), 4))
  outputs = [device_axis.shard({'id': b['image'][:, 0], 'mask': b['mask']}, 4)
             for b in padded]
  real = device_axis.real_examples(outputs)
  assert set(real) == {'id'}
  np.testing.assert_array_equal(real['id'], np.arange(17))


def test_a_pmapped_step_sees_each_devices_share_and_reduces_over_all():
  def step(state, batch):
    local = jax.numpy.sum(batch['image'][:, 0] * batch['mask'])
    return state + jax.lax.psum(local, device_axis.AXIS), batch['image'][:, 0]

  p_step = device_axis.pmap_step(
      step, out_axes=(device_axis.REDUCED, device_axis.PER_EXAMPLE))
  batches = device_axis.pad_batches(_batches([8, 3]), 4)
  totals, per_example = [], []
  for batch in device_axis.to_devices(batches):
    total, ids = p_step(10.0, batch)
    totals.append(float(total))
    per_example.append({'id': ids, 'mask': batch['mask']})
  assert totals == [10.0 + sum(range(8)), 10.0 + 8 + 9 + 10]
  np.testing.assert_array_equal(
      device_axis.real_examples(per_example)['id'], np.arange(11))


def test_to_devices_splits_over_the_devices_given():
  for devices, shape in ((jax.devices()[:1], (1, 4, 2)),
                         (jax.devices()[:2], (2, 2, 2))):
    batch = next(device_axis.to_devices(_batches([4]), devices))
    assert batch['image'].shape == shape
    assert set(batch['image'].sharding.device_set) == set(devices)


@pytest.mark.parametrize('replicate', [False, True])
def test_a_replicated_state_runs_the_program_of_every_later_step(replicate):
  # A step compiles (lowers) a program per placement of its inputs: a state
  # made by jit, then fed back from the step, takes two unless it starts
  # replicated as the step returns it. Lowerings are counted (a persistent
  # compilation cache may skip the backend's compile, never the lowering).
  lowered = []
  def listener(event, duration, **kwargs):
    del duration, kwargs
    if event == '/jax/core/compile/jaxpr_to_mlir_module_duration':
      lowered.append(event)
  def step(state, batch):
    grad = jax.lax.pmean(batch.sum() * state['w'], device_axis.AXIS)
    return {'w': state['w'] - 0.125 * grad}, grad
  devices = jax.local_devices()
  p_step = device_axis.pmap_step(step, devices=devices)
  state = jax.jit(lambda: {'w': jax.numpy.arange(3.0)})()
  if replicate:
    state = device_axis.replicated(state, devices)
  batch = np.ones((len(devices), 2), np.float32)
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    for _ in range(3):
      state, _ = p_step(state, batch)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert len(lowered) == (1 if replicate else 2)
  np.testing.assert_allclose(state['w'], np.arange(3.0) * (1 - 0.25) ** 3)
