"""Pure train, eval and predict steps.

Each runs on one device's share of a batch under `device_axis.pmap_step`
(axis device_axis.AXIS): gradients and metric sums are reduced across
devices, so a step's state and metrics are identical on every device.
"""

import jax
import jax.numpy as jnp
import optax

from imgclf_jax.device_axis import AXIS
from imgclf_jax.metrics import Metrics


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


def train_step(state, batch, rng, label_smoothing: float = 0.0,
               microbatches: int = 1):
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
  whole-batch computation keeps about one core busy.
  """
  dropout_rng = jax.random.fold_in(rng, state.step)
  per_device = batch['label'].shape[0]
  batch = dict(batch, example_id=jax.lax.axis_index(AXIS) * per_device +
               jnp.arange(per_device))

  def loss_fn(params, part):
    logits = state.apply_fn({'params': params}, part['image'], train=True,
                            example_ids=part['example_id'],
                            rngs={'dropout': dropout_rng})
    loss = cross_entropy(logits, part['label'], label_smoothing)
    if 'weight' in part:
      return (loss * part['weight']).mean(), (loss, logits)
    return loss.mean(), (loss, logits)

  grad_fn = jax.grad(loss_fn, has_aux=True)
  if microbatches == 1:
    grads, (loss, logits) = grad_fn(state.params, batch)
  else:
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
  return new_state, _metrics(loss, logits, batch['label'],
                             jnp.ones_like(loss))


def eval_step(state, batch):
  """Loss and accuracy sums over the real (mask 1) examples of `batch`."""
  logits = state.apply_fn({'params': state.params}, batch['image'],
                          train=False)
  loss = cross_entropy(logits, batch['label'])
  return _metrics(loss, logits, batch['label'], batch['mask'])


def _logits(state, images):
  return state.apply_fn({'params': state.params}, images, train=False)


def predict_step(state, batch):
  """Class probabilities [B, K] of this device's share of batch['image']."""
  return jax.nn.softmax(_logits(state, batch['image']))


def eval_outputs_step(state, batch):
  """eval_step's metrics, and per example: probabilities, predicted class,
  its probability (confidence), true class and mask (for reports: confusion
  matrix, galleries)."""
  logits = _logits(state, batch['image'])
  loss = cross_entropy(logits, batch['label'])
  probs = jax.nn.softmax(logits)
  outputs = {'probs': probs,
             'predicted': jnp.argmax(logits, -1),
             'confidence': jnp.max(probs, -1),
             'label': jnp.argmax(batch['label'], -1),
             'mask': batch['mask']}
  return _metrics(loss, logits, batch['label'], batch['mask']), outputs
