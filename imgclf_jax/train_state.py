"""TrainState, optimizer and learning-rate schedule built from the config."""

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
  """params, opt_state and step; apply_fn and tx are static."""


def learning_rate_schedule(config, steps_per_epoch: int) -> optax.Schedule:
  total = int(config.num_epochs * steps_per_epoch)
  warmup = int(config.warmup_epochs * steps_per_epoch)
  lr = config.learning_rate
  if config.lr_schedule == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, max(warmup, 1), max(total, warmup + 1))
  if config.lr_schedule == 'cosine':
    main = optax.cosine_decay_schedule(lr, max(total - warmup, 1))
  else:
    main = optax.constant_schedule(lr)
  if warmup:
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), main], [warmup])
  return main


def create_optimizer(config, steps_per_epoch: int):
  schedule = learning_rate_schedule(config, steps_per_epoch)
  if config.weight_decay > 0:
    return optax.adamw(schedule, weight_decay=config.weight_decay)
  return optax.adam(schedule)


def create_train_state(rng, model, image_shape, config,
                       steps_per_epoch: int) -> TrainState:
  """Initialises parameters with `rng` for inputs of `image_shape` (HWC)."""
  variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32),
                         train=False)
  return TrainState.create(apply_fn=model.apply, params=variables['params'],
                           tx=create_optimizer(config, steps_per_epoch))


def abstract_train_state(model, image_shape, config, steps_per_epoch: int):
  """The shapes/dtypes of a TrainState, without computing anything."""
  return jax.eval_shape(
      lambda rng: create_train_state(rng, model, image_shape, config,
                                     steps_per_epoch),
      jax.random.key(0))
