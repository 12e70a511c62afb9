"""Device-resident training data: batches drawn and augmented in the step.

With `config.data_on_device=True` the resized uint8 training split is copied
to every local device once (N x S x S x C bytes: 138 MB for CIFAR-10's 45,000
training images). Each step the host sends only the batch's example indices;
inside the pmapped step the images are gathered, augmented (with
`augment.augment`, the code the tf.data path runs, drawing JAX random
numbers), normalised and one-hot labelled, and `steps.train_step` runs on
them. `train_batches` yields global index batches [B], which
device_axis.to_devices splits over the devices like any batch. No tf.data work runs beside the step, so neither an accelerator nor
the CPU cores the step runs on wait for or share with the input pipeline.

Evaluation keeps the tf.data pipeline (no augmentation, read once per
epoch). Oversampling and minority-class augmentation are tf.data features
only (configuration.validate rejects them with data_on_device).
"""

import functools
from typing import Iterator

from absl import logging
from flax import jax_utils
import jax
import jax.numpy as jnp
import numpy as np

from imgclf_jax.data import augment
from imgclf_jax.data import input_pipeline
from imgclf_jax.data import preprocess
from imgclf_jax.data import train_stream
from imgclf_jax.parallel import device_axis
from imgclf_jax.parallel import distributed


def make_batch(images, labels, indices, key, spec: augment.AugmentSpec,
               normalization, num_classes: int, class_weights=None) -> dict:
  """The training batch of `indices` as the tf.data pipeline would make it.

  Args:
    images: uint8 [N, S, S, C], the whole training split.
    labels: int32 [N].
    indices: int32 [B], the examples of this batch.
    key: the JAX key of this step's augmentation; each example's draws
      come from it folded with the example's index, so an example is
      augmented the same whichever device or batch position holds it.
    spec: the augmentations and their sizes.
    normalization: {'mean': [C], 'std': [C]}.
    num_classes: for the one-hot labels.
    class_weights: float32 [K] loss weight per class, or None.
  """
  batch_labels = jnp.take(labels, indices, axis=0)
  pixels = jnp.take(images, indices, axis=0).astype(jnp.float32) / 255.0
  if spec:
    keys = jax.random.split(key, augment.num_streams(spec))

    def uniform(stream, shape, low, high):
      def draw(index):
        return jax.random.uniform(jax.random.fold_in(keys[stream], index),
                                  tuple(shape[1:]), jnp.float32, low, high)
      return jax.vmap(draw)(indices)

    pixels = augment.augment(augment.jax_ops(), pixels, uniform,
                                  spec)
  batch = {'image': preprocess.normalize(pixels, normalization),
           'label': jax.nn.one_hot(batch_labels, num_classes)}
  if class_weights is not None:
    batch['weight'] = jnp.take(class_weights, batch_labels, axis=0)
  return batch


def train_step(state, images, labels, indices, rng, *, batch_fn, step_fn):
  """Draws this device's batch from the resident data, then train_step.

  `rng` is split into the augmentation's and the step's (dropout) keys; the
  augmentation key is folded with the step, and make_batch folds it with
  each example's index: every step and example is augmented differently,
  and the same on any number of devices (as the dropout masks are).
  """
  augment_rng, step_rng = jax.random.split(rng)
  key = jax.random.fold_in(augment_rng, state.step)
  # Materialise the batch: fused into its consumers (the first convolution
  # reads each pixel 9 times), the warp's gathers were recomputed per read.
  batch = jax.lax.optimization_barrier(batch_fn(images, labels, indices, key))
  return step_fn(state, batch, step_rng)


class DeviceData:
  """The training split on the devices, and the pmapped step that reads it."""

  def __init__(self, pipeline: input_pipeline.InputPipeline, step_fn,
               seed: int, batch_size: int, devices=None):
    """`step_fn`: the train step, (state, batch, rng) -> (state, metrics)
    (steps.train_step_for); `seed` fixes each epoch's order of the
    `batch_size` batches; `devices`: those the batches are split over
    (default: all local devices)."""
    self.seed, self.batch_size = seed, batch_size
    self.devices = device_axis.local_devices(devices)
    images, labels = pipeline.arrays('train')
    self.num_examples = len(labels)
    logging.info('data_on_device: %d training images, %.1f MB on each of %d '
                 'devices.', len(labels), images.nbytes / 2**20,
                 len(self.devices))
    self.images, self.labels = jax_utils.replicate((images, labels),
                                                   self.devices)
    self.steps_per_epoch = pipeline.steps_per_epoch
    weights = pipeline.loss_weights()
    batch_fn = functools.partial(
        make_batch, spec=pipeline.spec.augment,
        normalization=pipeline.normalization,
        num_classes=pipeline.source.info.num_classes,
        class_weights=None if weights is None else jnp.asarray(weights,
                                                               jnp.float32))
    self._p_step = device_axis.pmap_step(
        functools.partial(train_step, batch_fn=batch_fn, step_fn=step_fn),
        in_axes=(None, 0, 0, 0, None), devices=self.devices)

  def train_batches(self, epoch: int, start: int = 0) -> Iterator[np.ndarray]:
    """Per step, the example indices [B] of training epoch `epoch` from its
    step `start` on: a permutation fixed by (seed, epoch); the last
    partial batch is dropped, as in the tf.data pipeline. With several
    processes, each gets its rows [B / processes] of every batch (each holds
    the whole split on its devices), so the training is that of one."""
    order = np.random.default_rng(
        train_stream.epoch_seeds(self.seed, epoch)).permutation(
            self.num_examples)
    order = order[:self.steps_per_epoch * self.batch_size].astype(np.int32)
    batches = order.reshape(self.steps_per_epoch, self.batch_size)[start:]
    # With several processes, this process's rows of each global batch.
    yield from batches[:, distributed.process_slice(self.batch_size)]

  def train_step(self, state, indices, rng):
    """The trainer's step: (state, indices [D, B/D], rng) -> (state, metrics)."""
    return self._p_step(state, self.images, self.labels, indices, rng)
