"""TrainState, optimizer and learning-rate schedule built from an OptimSpec."""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from imgclf_jax.training.spec import OptimSpec


class TrainState(train_state.TrainState):
  """params, opt_state and step; apply_fn and tx are static.

  batch_stats: the BatchNorm running statistics (None for models without
  BatchNorm). ema: {'params', 'batch_stats'?}, the moving average of the
  weights used by eval, predict and export when OptimSpec.ema_decay > 0
  (else None); the raw weights stay in params, so training resumes exactly.
  slow: the lookahead's slow weights and statistics (steps.Lookahead) when
  OptimSpec.lookahead_every_steps > 0, else None.
  """
  batch_stats: Any = None
  ema: Any = None
  slow: Any = None


def learning_rate_schedule(spec: OptimSpec,
                           steps_per_epoch: int) -> optax.Schedule:
  """A linear warmup over `warmup_epochs` from lr_start_fraction x
  learning_rate to learning_rate, then `lr_schedule` ('constant', 'cosine'
  or 'linear') down to lr_end_fraction x learning_rate at the last step."""
  total = int(spec.num_epochs * steps_per_epoch)
  warmup = int(spec.warmup_epochs * steps_per_epoch)
  lr = spec.learning_rate
  end = lr * spec.lr_end_fraction
  decay_steps = max(total - warmup, 1)
  if spec.lr_schedule == 'cosine':
    main = optax.cosine_decay_schedule(lr, decay_steps,
                                       alpha=spec.lr_end_fraction)
  elif spec.lr_schedule == 'linear':
    main = optax.linear_schedule(lr, end, decay_steps)
  else:
    main = optax.constant_schedule(lr)
  if warmup:
    return optax.join_schedules(
        [optax.linear_schedule(lr * spec.lr_start_fraction, lr, warmup),
         main], [warmup])
  return main


def _path(keys) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in keys)


def _mask(params, predicate):
  return jax.tree_util.tree_map_with_path(
      lambda keys, _: predicate(_path(keys)), params)


def _step_gate(first_step: int) -> optax.GradientTransformation:
  """Updates times 0 before step `first_step` (its own count), 1 after."""
  return optax.scale_by_schedule(
      lambda count: jnp.where(count < first_step, 0.0, 1.0))


def create_optimizer(spec: OptimSpec, steps_per_epoch: int, norm_paths=(),
                     frozen_from_epoch=None,
                     head: str | None = None) -> optax.GradientTransformation:
  """spec.optimizer with decoupled weight decay, all from optax.

  'adam' is optax.adam (optax.adamw when weight_decay > 0), 'adamw'
  optax.adamw, 'sgd' momentum (Nesterov with spec.nesterov) then the
  decay: the update is -lr(t) (m(t) + weight_decay * params).
  `norm_paths`: the parameter paths of normalisation layers, whose biases'
  steps are spec.norm_bias_lr_scale times larger (their decay is not).
  `frozen_from_epoch`: parameter path -> the epoch from which it is no
  longer updated (0: never trained).
  `head`: the module path of the classifier head; every other parameter
  (the pretrained layers) gets updates spec.pretrained_lr_scale times
  as large, and none before epoch spec.probe_epochs (the linear probe).
  Both are optax.masked transforms after the whole update (weight decay
  included) whatever the step, so the optimizer state has the same shape
  in and after the probe.
  """
  schedule = learning_rate_schedule(spec, steps_per_epoch)
  name, wd = spec.optimizer, spec.weight_decay
  if name == 'sgd':
    core = [optax.trace(spec.momentum, nesterov=spec.nesterov)]
  else:
    core = [optax.scale_by_adam()]
  scale = spec.norm_bias_lr_scale
  if scale != 1.0:
    norm_biases = {f'{p}/bias' for p in norm_paths}
    core.append(optax.masked(optax.scale(scale),
                             lambda params: _mask(params, norm_biases.__contains__)))
  if name == 'sgd' or scale != 1.0:
    parts = core + ([optax.add_decayed_weights(wd)] if wd > 0 else []) + [
        optax.scale_by_learning_rate(schedule)]
    tx = optax.chain(*parts)
  elif wd > 0 or name == 'adamw':
    tx = optax.adamw(schedule, weight_decay=wd)
  else:
    tx = optax.adam(schedule)
  for path, epoch in sorted((frozen_from_epoch or {}).items()):
    until = int(round(epoch * steps_per_epoch))
    tx = optax.chain(tx, optax.masked(
        optax.scale_by_schedule(
            lambda count, until=until: jnp.where(count < until, 1.0, 0.0)),
        lambda params, path=path: _mask(params, path.__eq__)))
  if head is not None and (spec.pretrained_lr_scale != 1.0 or
                           spec.probe_epochs > 0):
    def pretrained(params):
      return _mask(params, lambda p: not p.startswith(head + '/'))
    if spec.pretrained_lr_scale != 1.0:
      tx = optax.chain(tx, optax.masked(
          optax.scale(spec.pretrained_lr_scale), pretrained))
    if spec.probe_epochs > 0:
      tx = optax.chain(tx, optax.masked(
          _step_gate(int(round(spec.probe_epochs * steps_per_epoch))),
          pretrained))
  return tx


def create_train_state(rng, model, image_shape, spec: OptimSpec,
                       steps_per_epoch: int,
                       head: str | None = None) -> TrainState:
  """Initialises parameters with `rng` for inputs of `image_shape` (HWC);
  `head`: the model's classifier module (registry.HEADS), for
  create_optimizer. One compiled program: outside jit every operation of
  the initialisation is compiled on its own, which takes several times
  longer."""
  return jax.jit(functools.partial(
      _new_train_state, model=model, image_shape=image_shape, spec=spec,
      steps_per_epoch=steps_per_epoch, head=head))(rng)


def _new_train_state(rng, model, image_shape, spec: OptimSpec,
                     steps_per_epoch: int, head: str | None) -> TrainState:
  variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32),
                         train=False)
  params = variables['params']
  batch_stats = variables.get('batch_stats')
  # The normalisation layers: the modules holding BatchNorm statistics.
  norm_paths = () if batch_stats is None else tuple(sorted({
      '/'.join(keys[:-1])
      for keys in flax.traverse_util.flatten_dict(batch_stats)}))
  frozen = (model.frozen_paths(spec.whiten_bias_epochs)
            if hasattr(model, 'frozen_paths') else None)
  tx = create_optimizer(spec, steps_per_epoch, norm_paths, frozen,
                        head=head)
  copy = {'params': params}
  if batch_stats is not None:
    copy['batch_stats'] = batch_stats
  return TrainState.create(
      apply_fn=model.apply, params=params, tx=tx, batch_stats=batch_stats,
      ema=copy if spec.ema_decay > 0 else None,
      slow=copy if spec.lookahead_every_steps > 0 else None)


def with_params(state: TrainState, params, batch_stats=None) -> TrainState:
  """`state` with new initial `params` (a data-dependent initialisation,
  pretrained weights) and, where given, BatchNorm `batch_stats`; the EMA and
  the lookahead's slow weights restarted from them."""
  new = {'params': params}
  if batch_stats is not None:
    new['batch_stats'] = batch_stats
  def restart(copy):
    return None if copy is None else {**copy, **new}
  return state.replace(**new, opt_state=state.tx.init(params),
                       ema=restart(state.ema), slow=restart(state.slow))


def abstract_train_state(model, image_shape, spec: OptimSpec,
                         steps_per_epoch: int, head: str | None = None):
  """The shapes/dtypes of a TrainState (create_train_state's), without
  computing anything."""
  return jax.eval_shape(
      functools.partial(_new_train_state, model=model,
                        image_shape=image_shape, spec=spec,
                        steps_per_epoch=steps_per_epoch, head=head),
      jax.random.key(0))


def restore_target(model, image_shape, spec: OptimSpec, steps_per_epoch: int,
                   head: str | None = None):
  """What a checkpoint's TrainState is restored into (create_train_state's
  structure, its tx for `steps_per_epoch`): the arrays' shapes and dtypes
  (abstract_train_state), without initialising the model; on this
  process's first device, whatever devices saved them; as numpy zeros with
  several processes (each restores the arrays whole)."""
  target = abstract_train_state(model, image_shape, spec, steps_per_epoch,
                                head)
  if jax.process_count() > 1:
    return jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), target)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
      target)
