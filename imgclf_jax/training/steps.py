"""Pure train, eval and predict steps.

Each runs on one device's share of a batch under `device_axis.pmap_step`
(axis device_axis.AXIS): gradients and metric sums are reduced across
devices, so a step's state and metrics are identical on every device.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from imgclf_jax.models import tta as tta_lib
from imgclf_jax.parallel.device_axis import AXIS
from imgclf_jax.training.metrics import Metrics
from imgclf_jax.training.spec import OptimSpec


def cross_entropy(logits, one_hot_labels, label_smoothing: float = 0.0):
  """Per-example softmax cross-entropy against (optionally smoothed) labels."""
  if label_smoothing:
    one_hot_labels = optax.smooth_labels(one_hot_labels, label_smoothing)
  return optax.softmax_cross_entropy(logits, one_hot_labels)


def _metrics(per_example_loss, logits, labels, weights):
  correct = (jnp.argmax(logits, -1) == jnp.argmax(labels, -1)) * weights
  sums = jax.lax.psum((jnp.sum(per_example_loss * weights), jnp.sum(correct),
                       jnp.sum(weights)), AXIS)
  return Metrics.from_sums(*sums)


def model_variables(state, params=None) -> dict:
  """The variables the model is applied with: `params` (default
  state.params), and the BatchNorm statistics when the model has them."""
  variables = {'params': state.params if params is None else params}
  if state.batch_stats is not None:
    variables['batch_stats'] = state.batch_stats
  return variables


def inference_variables(state) -> dict:
  """The variables of evaluation, prediction and export: the moving average
  of the weights (and of the BatchNorm statistics) when OptimSpec.ema_decay > 0,
  else the trained ones."""
  return state.ema if state.ema is not None else model_variables(state)


def ema_decay_at(step, ema_decay: float):
  """The EMA's decay at `step` (the number of updates before this one):
  min(ema_decay, (1 + step) / (10 + step)), as TensorFlow's
  ExponentialMovingAverage with num_updates, so that the average forgets the
  initial weights quickly in a short run."""
  return jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))


def update_ema(ema: dict, variables: dict, decay):
  """ema <- decay * ema + (1 - decay) * variables, leaf by leaf (optax)."""
  return optax.incremental_update(variables, ema, 1.0 - decay)


class Lookahead(NamedTuple):
  """airbench94's lookahead (Keller Jordan, after hlb-CIFAR10): from step
  `first` on, every `every` steps the slow weights (and BatchNorm
  statistics) move towards the trained ones, slow <- slow + (1 - rho) (fast -
  slow) with rho = decay**every * (step / total)**power, and the trained
  ones are set to the slow ones; at the end of every epoch (`per_epoch`
  steps) too. At step `first` the slow weights start as the trained ones."""
  every: int
  first: int
  decay: float
  power: float
  total: int
  per_epoch: int


def lookahead_for(spec: OptimSpec, steps_per_epoch: int) -> Lookahead | None:
  """The spec's Lookahead (None with lookahead_every_steps 0): from the
  first multiple of `every` after lookahead_start_epochs."""
  every = spec.lookahead_every_steps
  if not every:
    return None
  start = int(spec.lookahead_start_epochs * steps_per_epoch)
  return Lookahead(every, (start // every + 1) * every, spec.lookahead_decay,
                   spec.lookahead_decay_power,
                   int(spec.num_epochs * steps_per_epoch), steps_per_epoch)


def apply_lookahead(slow: dict, fast: dict, step, la: Lookahead):
  """(slow, fast) after step number `step` (the count after the update)."""
  started = step >= la.first
  sync = started & (step % la.every == 0)
  rho = jnp.where(step == la.first, 0.0, la.decay ** la.every *
                  (step / la.total) ** la.power)
  slow = jax.tree.map(lambda s, f: jnp.where(sync, s + (1 - rho) * (f - s), s),
                      slow, fast)
  copy = sync | (started & (step % la.per_epoch == 0))
  fast = jax.tree.map(lambda s, f: jnp.where(copy, s, f), slow, fast)
  return slow, fast


def train_step(state, batch, rng, label_smoothing: float = 0.0,
               microbatches: int = 1, ema_decay: float = 0.0,
               lookahead: Lookahead | None = None):
  """One optimizer step on this device's share of `batch`.

  The dropout key is `rng` folded with the step number (`rng` itself is never
  used directly), and each example's mask is drawn from it and the example's
  position in the global batch (models.ExampleDropout): a fresh mask for
  every step and example, and the same masks however the batch is split over
  devices and microbatches, so a seed trains the same on one device or
  several, CPU (2 microbatches) or GPU (1).

  With a per-example `weight` in the batch (config.class_weights) the step
  minimises mean(weight * loss) over the batch; the metrics it returns stay
  the plain mean loss and accuracy, comparable with validation.

  `microbatches` > 1 computes the gradient of the batch as the mean of the
  gradients of that many equal microbatches, which is the same gradient;
  XLA:CPU runs the independent microbatches on separate cores, where one
  whole-batch computation keeps about one core busy. (Models with BatchNorm
  take 1: their statistics are over the whole batch.)

  With BatchNorm (state.batch_stats) the model runs in training mode with
  its statistics mutable; the model averages the batch statistics over the
  devices (its axis_name), so the new statistics are the same on every
  device. With `lookahead` the step applies it (state.slow holds the slow
  weights; apply_lookahead). With `ema_decay` > 0 the step also updates
  state.ema, the moving average of the new weights and statistics
  (ema_decay_at).
  """
  dropout_rng = jax.random.fold_in(rng, state.step)
  per_device = batch['label'].shape[0]
  batch = dict(batch, example_id=jax.lax.axis_index(AXIS) * per_device +
               jnp.arange(per_device))
  mutable = ['batch_stats'] if state.batch_stats is not None else False

  def loss_fn(params, part):
    out = state.apply_fn(model_variables(state, params), part['image'],
                         train=True, example_ids=part['example_id'],
                         rngs={'dropout': dropout_rng}, mutable=mutable)
    logits, updates = out if mutable else (out, {})
    loss = cross_entropy(logits, part['label'], label_smoothing)
    weighted = (loss * part['weight']).mean() if 'weight' in part else (
        loss.mean())
    return weighted, (loss, logits, updates)

  grad_fn = jax.grad(loss_fn, has_aux=True)
  if microbatches == 1:
    grads, (loss, logits, updates) = grad_fn(state.params, batch)
  else:
    if mutable:
      raise ValueError('BatchNorm models take microbatches=1 (their batch '
                       'statistics are over the whole batch)')
    split = jax.tree.map(lambda x: jnp.split(x, microbatches), batch)
    parts = [jax.tree.map(lambda pieces, i=i: pieces[i], split,
                          is_leaf=lambda x: isinstance(x, list))
             for i in range(microbatches)]
    results = [grad_fn(state.params, part) for part in parts]
    grads = jax.tree.map(lambda *g: sum(g) / microbatches,
                         *[r[0] for r in results])
    loss = jnp.concatenate([r[1][0] for r in results])
    logits = jnp.concatenate([r[1][1] for r in results])
  grads = jax.lax.pmean(grads, AXIS)
  new_state = state.apply_gradients(grads=grads)
  if mutable:
    new_state = new_state.replace(batch_stats=updates['batch_stats'])
  if lookahead is not None:
    slow, fast = apply_lookahead(state.slow, model_variables(new_state),
                                 new_state.step, lookahead)
    new_state = new_state.replace(slow=slow, params=fast['params'],
                                  batch_stats=fast.get('batch_stats'))
  if state.ema is not None:
    new_state = new_state.replace(ema=update_ema(
        state.ema, model_variables(new_state),
        ema_decay_at(state.step, ema_decay)))
  return new_state, _metrics(loss, logits, batch['label'],
                             jnp.ones_like(loss))


def train_step_for(spec: OptimSpec, steps_per_epoch: int):
  """train_step with the spec's label smoothing, microbatches, EMA decay
  and lookahead: (state, batch, rng) -> (state, metrics)."""
  return functools.partial(train_step, label_smoothing=spec.label_smoothing,
                           microbatches=spec.microbatches,
                           ema_decay=spec.ema_decay,
                           lookahead=lookahead_for(spec, steps_per_epoch))


def _logits(state, images, tta: str = 'none'):
  return tta_lib.tta_logits(state.apply_fn, inference_variables(state), images, tta)


def eval_step(state, batch, tta: str = 'none'):
  """Loss and accuracy sums over the real (mask 1) examples of `batch`."""
  logits = _logits(state, batch['image'], tta)
  loss = cross_entropy(logits, batch['label'])
  return _metrics(loss, logits, batch['label'], batch['mask'])


def predict_step(state, batch, tta: str = 'none'):
  """Class probabilities [B, K] of this device's share of batch['image']."""
  return jax.nn.softmax(_logits(state, batch['image'], tta))


def eval_outputs_step(state, batch, tta: str = 'none'):
  """eval_step's metrics, and per example: probabilities, predicted class,
  its probability (confidence), true class and mask (for reports: confusion
  matrix, galleries)."""
  logits = _logits(state, batch['image'], tta)
  loss = cross_entropy(logits, batch['label'])
  probs = jax.nn.softmax(logits)
  outputs = {'probs': probs,
             'predicted': jnp.argmax(logits, -1),
             'confidence': jnp.max(probs, -1),
             'label': jnp.argmax(batch['label'], -1),
             'mask': batch['mask']}
  return _metrics(loss, logits, batch['label'], batch['mask']), outputs
