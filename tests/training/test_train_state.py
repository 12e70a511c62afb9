"""train_state.py: the optimizers, schedules, the norm-bias step scale,
frozen parameters and the EMA, against their definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from imgclf_jax.config import specs
from imgclf_jax.models import registry
from imgclf_jax.training import steps
from imgclf_jax.training import train_state as train_state_lib
from tests import helpers


def _config(**overrides):
  return helpers.small_config('cifar10', **overrides)


@pytest.mark.parametrize('schedule, expected', [
    # 10 steps: warmup over 4 from 0.2 x 1.0, then to 0.1 x 1.0 at step 10.
    ('linear', [0.2, 0.4, 0.6, 0.8, 1.0, 0.85, 0.7, 0.55, 0.4, 0.25, 0.1]),
    ('constant', [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
])
def test_warmup_then_decay_to_the_end_fraction(schedule, expected):
  config = _config(num_epochs=2, learning_rate=1.0, lr_schedule=schedule,
                   warmup_epochs=0.8, lr_start_fraction=0.2,
                   lr_end_fraction=0.1)
  fn = train_state_lib.learning_rate_schedule(specs.optim_spec(config),
                                             steps_per_epoch=5)
  np.testing.assert_allclose([fn(i) for i in range(11)], expected, atol=1e-6)


def test_cosine_ends_at_its_fraction():
  config = _config(num_epochs=1, learning_rate=2.0, lr_schedule='cosine',
                   lr_end_fraction=0.25)
  fn = train_state_lib.learning_rate_schedule(specs.optim_spec(config),
                                             steps_per_epoch=8)
  np.testing.assert_allclose([fn(0), fn(4), fn(8)], [2.0, 1.25, 0.5],
                             atol=1e-6)


def _run(tx, params, grads_seq):
  opt_state = tx.init(params)
  for g in grads_seq:
    updates, opt_state = tx.update(g, opt_state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_sgd_nesterov_with_decoupled_weight_decay_and_norm_bias_scale():
  config = _config(optimizer='sgd', momentum=0.8, nesterov=True,
                   learning_rate=0.1, weight_decay=0.5, norm_bias_lr_scale=4.0)
  params = {'BatchNorm_0': {'bias': jnp.array([1.0])},
            'Dense_0': {'bias': jnp.array([1.0]), 'kernel': jnp.array([2.0])}}
  tx = train_state_lib.create_optimizer(specs.optim_spec(config), 10,
                                        norm_paths=('BatchNorm_0',))
  grads = [jax.tree.map(lambda p, g=g: jnp.full_like(p, g), params)
           for g in (1.0, -2.0, 0.5)]
  got = _run(tx, params, grads)

  def reference(p, scale):
    buf = 0.0
    for g in (1.0, -2.0, 0.5):
      buf = 0.8 * buf + g
      step = scale * (g + 0.8 * buf) + 0.5 * p   # decay: not scaled
      p = p - 0.1 * step
    return p
  np.testing.assert_allclose(got['BatchNorm_0']['bias'], reference(1.0, 4.0),
                             rtol=1e-6)
  np.testing.assert_allclose(got['Dense_0']['bias'], reference(1.0, 1.0),
                             rtol=1e-6)
  np.testing.assert_allclose(got['Dense_0']['kernel'], reference(2.0, 1.0),
                             rtol=1e-6)


def test_adam_is_optax_adam_and_adamw_with_weight_decay():
  params = {'w': jnp.array([1.0, -1.0])}
  grads = [{'w': jnp.array([0.3, 0.1])}] * 3
  for overrides, reference in (
      ({}, optax.adam(1e-2)),
      ({'weight_decay': 0.1}, optax.adamw(1e-2, weight_decay=0.1)),
      ({'optimizer': 'adamw', 'weight_decay': 0.1},
       optax.adamw(1e-2, weight_decay=0.1))):
    tx = train_state_lib.create_optimizer(specs.optim_spec(_config(
        learning_rate=1e-2, **overrides)), 10)
    np.testing.assert_allclose(_run(tx, params, grads)['w'],
                               _run(reference, params, grads)['w'], rtol=1e-6)


def test_frozen_parameters_stop_at_their_epoch():
  config = _config(optimizer='sgd', momentum=0.0, learning_rate=1.0,
                   weight_decay=0.1)
  params = {'a': jnp.array([1.0]), 'b': jnp.array([1.0]),
            'c': jnp.array([1.0])}
  tx = train_state_lib.create_optimizer(
      specs.optim_spec(config), steps_per_epoch=2,
      frozen_from_epoch={'a': 0.0, 'b': 1.0})
  grads = [{k: jnp.array([1.0]) for k in params}] * 4
  opt_state, history = tx.init(params), []
  for g in grads:
    updates, opt_state = tx.update(g, opt_state, params)
    params = optax.apply_updates(params, updates)
    history.append({k: float(v[0]) for k, v in params.items()})
  assert [h['a'] for h in history] == [1.0] * 4         # never trained
  assert history[0]['b'] < 1.0 and history[1]['b'] < history[0]['b']
  assert history[3]['b'] == history[2]['b'] == history[1]['b']
  assert history[3]['c'] < history[2]['c']              # always trained


def test_ema_follows_its_definition_over_a_few_steps():
  config = _config(learning_rate=1e-2, ema_decay=0.5)
  model = registry.create_model(specs.model_spec(config, 4))
  state = train_state_lib.create_train_state(
      jax.random.key(0), model, (16, 16, 3), specs.optim_spec(config),
      steps_per_epoch=10)
  p_train = helpers.p_train_step(devices=jax.devices()[:1], ema_decay=0.5)
  rng = np.random.default_rng(0)
  expected = state.params
  for i in range(3):
    batch = {'image': rng.normal(size=(1, 8, 16, 16, 3)).astype(np.float32),
             'label': np.eye(4, dtype=np.float32)[rng.integers(0, 4, (1, 8))]}
    state, _ = p_train(state, batch, jax.random.key(1))
    decay = min(0.5, (1 + i) / (10 + i))
    expected = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p,
                            expected, state.params)
  for e, got in zip(jax.tree.leaves(expected),
                    jax.tree.leaves(state.ema['params'])):
    np.testing.assert_allclose(got, e, rtol=1e-5, atol=1e-7)
  assert not np.allclose(state.ema['params']['Dense_1']['kernel'],
                         state.params['Dense_1']['kernel'])
  # Inference uses the average; the raw weights keep training.
  assert steps.inference_variables(state) is state.ema
