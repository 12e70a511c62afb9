"""steps.py: the train and eval steps under pmap: the loss falls, one device
or four and microbatches give the same update, a loss weight scales its
example's gradient, padding counts for nothing."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from imgclf_jax.config import specs
from imgclf_jax.models import registry
from imgclf_jax.models import tta as tta_lib
from imgclf_jax.parallel import device_axis
from imgclf_jax.training import steps
from imgclf_jax.training import train_state as train_state_lib
from tests import helpers


NUM_CLASSES = 4


def _state(dropout_rate=0.0, learning_rate=1e-3):
  config = helpers.small_config('cifar10', dropout_rate=dropout_rate,
                                learning_rate=learning_rate)
  model = registry.create_model(specs.model_spec(config, NUM_CLASSES))
  return train_state_lib.create_train_state(
      jax.random.key(0), model, (16, 16, 3), specs.optim_spec(config),
      steps_per_epoch=10)


def _batch(n=16, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_CLASSES, n)
  return {'image': rng.normal(size=(n, 16, 16, 3)).astype(np.float32),
          'label': np.eye(NUM_CLASSES, dtype=np.float32)[labels],
          'mask': np.ones(n, np.float32)}


def _shard(batch, devices):
  return device_axis.shard(batch, devices)


def _params_close(a, b, **tol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, **tol)


def test_train_step_lowers_the_loss_on_a_fixed_batch():
  # Adam's first step moves every weight by ~lr; 1e-3 overshoots on this
  # random batch, a smaller step does not.
  state, batch = _state(learning_rate=3e-4), _shard(_batch(), 1)
  train = helpers.p_train_step(devices=jax.devices()[:1])
  evaluate = helpers.p_eval_step(devices=jax.devices()[:1])
  before = evaluate(state, batch).compute()['loss']
  new_state, metrics = train(state, batch, jax.random.key(1))
  after = evaluate(new_state, batch).compute()['loss']
  assert int(new_state.step) == 1
  assert after < before
  # The step reports the loss of the batch before its update (dropout off).
  np.testing.assert_allclose(metrics.compute()['loss'], before, rtol=1e-5)
  assert float(metrics.accuracy.count) == 16


@pytest.mark.slow
@pytest.mark.parametrize('dropout_rate', [0.0, 0.5])
def test_four_devices_give_the_same_update_as_one(dropout_rate):
  # With dropout too: each example's mask depends on its place in the global
  # batch, not on the device that holds it.
  assert jax.local_device_count() == 4, 'conftest sets 4 fake CPU devices'
  state, batch = _state(dropout_rate), _batch()
  rng = jax.random.key(1)
  one, m1 = helpers.p_train_step(devices=jax.devices()[:1])(
      state, _shard(batch, 1), rng)
  four, m4 = helpers.p_train_step()(state, _shard(batch, 4), rng)
  # (Adam's update is ~1e-3 per weight; float sums in another order move a
  # few near-zero gradients' updates by up to ~1e-5.)
  _params_close(one.params, four.params, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(m1.compute()['loss'], m4.compute()['loss'],
                             rtol=1e-5)
  assert float(m4.loss.count) == 16
  # Dropout is really on: the same step without it ends elsewhere.
  if dropout_rate:
    plain, _ = helpers.p_train_step()(_state(0.0), _shard(batch, 4), rng)
    assert not np.allclose(plain.params['Dense_0']['kernel'],
                           four.params['Dense_0']['kernel'])


def test_dropout_masks_differ_per_step_and_per_example():
  state = _state(dropout_rate=0.5)
  rng = jax.random.key(1)
  shard = _batch(n=4)
  train1 = helpers.p_train_step(devices=jax.devices()[:1])
  train4 = helpers.p_train_step()
  # Per step: the same state, batch and rng at another step number.
  a, _ = train1(state, _shard(shard, 1), rng)
  b, _ = train1(state.replace(step=state.step + 1), _shard(shard, 1), rng)
  assert not np.allclose(a.params['Dense_0']['kernel'],
                         b.params['Dense_0']['kernel'])
  # Per example: four copies of one shard, one per device, hold examples
  # 0-3, 4-7, ... of the global batch. Equal masks for the copies would make
  # the mean gradient equal to the single-device one.
  same = jax.tree.map(lambda x: np.stack([x] * 4), shard)
  c, _ = train4(state, same, rng)
  assert not np.allclose(a.params['Dense_0']['kernel'],
                         c.params['Dense_0']['kernel'])


def test_eval_step_ignores_padding():
  state = _state()
  batch = _batch(8)
  padded = jax.tree.map(lambda x: np.concatenate([x, np.zeros_like(x)]), batch)
  padded['image'][8:] = 100.0  # garbage that would change the loss
  evaluate = helpers.p_eval_step()
  m_plain = evaluate(state, _shard(batch, 4)).compute()
  m_padded = evaluate(state, _shard(padded, 4)).compute()
  np.testing.assert_allclose(m_plain['loss'], m_padded['loss'], rtol=1e-6)
  assert m_plain['accuracy'] == m_padded['accuracy']


def test_label_smoothing_changes_the_loss():
  logits = jnp.array([[4.0, 0.0, 0.0, 0.0]])
  labels = jnp.array([[1.0, 0.0, 0.0, 0.0]])
  plain = steps.cross_entropy(logits, labels)
  smooth = steps.cross_entropy(logits, labels, label_smoothing=0.2)
  assert smooth > plain


@pytest.mark.slow
@pytest.mark.parametrize('dropout_rate', [0.0, 0.5])
def test_microbatched_step_gives_the_same_update(dropout_rate):
  state, batch = _state(dropout_rate), _batch(n=16)
  rng = jax.random.key(1)
  for extra in ({}, {'weight': np.linspace(0.5, 2.0, 16).astype(np.float32)}):
    b = dict(batch, **extra)
    whole, m1 = helpers.p_train_step()(state, _shard(b, 4), rng)
    split, m2 = helpers.p_train_step(microbatches=2)(state, _shard(b, 4),
                                                    rng)
    _params_close(whole.params, split.params, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m1.compute()['loss'], m2.compute()['loss'],
                               rtol=1e-6)
    assert float(m2.accuracy.count) == 16


class _Linear(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool, example_ids=None):
    del train, example_ids  # models' interface (registry.py)
    return nn.Dense(3)(x.reshape((x.shape[0], -1)))


def test_a_loss_weight_scales_its_examples_gradient():
  """train_step with weight w on an example == that example w times (SGD)."""
  rng = np.random.default_rng(0)
  images = rng.normal(size=(8, 4, 4, 3)).astype(np.float32)
  labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)]
  model = _Linear()
  params = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)),
                      train=False)['params']
  state = train_state_lib.TrainState.create(apply_fn=model.apply,
                                            params=params, tx=optax.sgd(1.0))
  step = helpers.p_train_step(devices=jax.devices()[:1])

  def update(batch):
    new, metrics = step(state, jax.tree.map(lambda x: x[None], batch),
                        jax.random.key(1))
    return jax.tree.map(lambda a, b: np.asarray(a - b), new.params,
                        state.params), metrics.compute()

  weights = np.ones(8, np.float32)
  weights[0] = 3.0
  weighted, weighted_metrics = update(
      {'image': images, 'label': labels, 'weight': weights})
  repeated, _ = update({'image': np.concatenate([images[:1]] * 2 + [images]),
                        'label': np.concatenate([labels[:1]] * 2 + [labels])})
  # Mean over 8 with example 0 counted 3 times vs mean over 10 examples.
  for a, b in zip(jax.tree.leaves(weighted), jax.tree.leaves(repeated)):
    np.testing.assert_allclose(a * 8, b * 10, rtol=1e-4, atol=2e-6)
  # Weight 0 removes an example's loss term entirely.
  zero = np.ones(8, np.float32)
  zero[0] = 0.0
  without, _ = update({'image': images, 'label': labels, 'weight': zero})
  rest, _ = update({'image': images[1:], 'label': labels[1:]})
  for a, b in zip(jax.tree.leaves(without), jax.tree.leaves(rest)):
    np.testing.assert_allclose(a * 8, b * 7, rtol=1e-4, atol=2e-6)
  # The reported loss stays the plain mean (comparable with validation).
  _, plain_metrics = update({'image': images, 'label': labels})
  assert float(weighted_metrics['loss']) == pytest.approx(
      float(plain_metrics['loss']), rel=1e-6)


@pytest.mark.slow
def test_half_precision_step_keeps_parameters_and_optimizer_in_float32():
  config = helpers.small_config('cifar10', half_precision=True)
  model = registry.create_model(specs.model_spec(config, NUM_CLASSES))
  state = train_state_lib.create_train_state(
      jax.random.key(0), model, (16, 16, 3), specs.optim_spec(config),
      steps_per_epoch=10)
  new, metrics = helpers.p_train_step()(state, _shard(_batch(), 4),
                                         jax.random.key(1))
  leaves = jax.tree.leaves((new.params, new.opt_state))
  floats = [x for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)]
  assert floats and all(x.dtype == jnp.float32 for x in floats)
  assert metrics.compute()['loss'].dtype == jnp.float32
  # It did train: the parameters moved.
  assert not np.allclose(new.params['Dense_0']['kernel'],
                         state.params['Dense_0']['kernel'])


@pytest.mark.parametrize('tta, views', [('none', 1), ('flip', 2),
                                        ('flip_translate', 6)])
def test_tta_logits_are_the_weighted_mean_of_the_views_logits(tta, views):
  state = _state()
  images = _batch(n=4)['image']
  got = steps._logits(state, images, tta)
  pairs = tta_lib.tta_views(images, tta)
  assert len(pairs) == views
  assert sum(w for w, _ in pairs) == pytest.approx(1.0)
  apply = lambda x: state.apply_fn({'params': state.params}, x, train=False)
  expected = sum(w * apply(v) for w, v in pairs)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  if tta != 'none':
    assert not np.allclose(got, apply(images), atol=1e-4)
  # The views: the mirror, and one-pixel shifts with reflected edges.
  if tta == 'flip_translate':
    shifted = np.asarray(pairs[2][1])
    np.testing.assert_array_equal(shifted[:, 1:, 1:], images[:, :-1, :-1])
    np.testing.assert_array_equal(shifted[:, 0, 1:], images[:, 1, :-1])
    np.testing.assert_array_equal(np.asarray(pairs[1][1]),
                                  images[:, :, ::-1])


def test_lookahead_follows_airbench_over_a_run():
  # every 2 steps from step 4 (start epoch 1 of 3-step epochs), 12 steps.
  config = helpers.small_config('cifar10', num_epochs=4,
                                lookahead_every_steps=2,
                                lookahead_start_epochs=1.0,
                                lookahead_decay=0.9, lookahead_decay_power=2.0)
  la = steps.lookahead_for(specs.optim_spec(config), steps_per_epoch=3)
  assert (la.first, la.total, la.per_epoch) == (4, 12, 3)
  rng = np.random.default_rng(0)
  slow = fast = {'params': {'w': jnp.zeros(3)}}
  ref_slow, ref_fast, started = None, np.zeros(3), False
  for step in range(1, 13):
    update = rng.normal(size=3)
    fast = {'params': {'w': fast['params']['w'] + update}}
    ref_fast = ref_fast + update
    slow, fast = steps.apply_lookahead(slow, fast, jnp.asarray(step), la)
    # The reference: airbench94's LookaheadState, updated after the step.
    if step > 3 and step % 2 == 0:
      if not started:
        ref_slow, started = ref_fast.copy(), True
      else:
        rho = 0.9 ** 2 * (step / 12) ** 2
        ref_slow = ref_slow + (1 - rho) * (ref_fast - ref_slow)
        ref_fast = ref_slow.copy()
    if started and step % 3 == 0:   # the end of an epoch
      ref_fast = ref_slow.copy()
    np.testing.assert_allclose(fast['params']['w'], ref_fast, rtol=1e-5,
                               atol=1e-6, err_msg=f'step {step}')
    if started:
      np.testing.assert_allclose(slow['params']['w'], ref_slow, rtol=1e-5,
                                 atol=1e-6)
  assert steps.lookahead_for(
      specs.optim_spec(helpers.small_config('cifar10')), 3) is None
