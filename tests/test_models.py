import jax
import jax.numpy as jnp
import numpy as np

from imgclf_jax import models
from tests import helpers


def _init(image_shape, num_classes=10):
  model = models.create_model(helpers.small_config('cifar10'), num_classes)
  variables = model.init(jax.random.key(0), jnp.zeros((2, *image_shape)),
                         train=False)
  return model, variables


def test_output_shape_and_parameter_count():
  model, variables = _init((32, 32, 3))
  logits = model.apply(variables, jnp.ones((5, 32, 32, 3)), train=False)
  assert logits.shape == (5, 10)
  shapes = jax.tree.map(lambda p: p.shape, variables['params'])
  assert shapes == {
      'Conv_0': {'kernel': (3, 3, 3, 32), 'bias': (32,)},
      'Conv_1': {'kernel': (3, 3, 32, 64), 'bias': (64,)},
      'Dense_0': {'kernel': (8 * 8 * 64, 128), 'bias': (128,)},
      'Dense_1': {'kernel': (128, 10), 'bias': (10,)},
  }
  count = sum(p.size for p in jax.tree.leaves(variables['params']))
  # 896 + 18,496 + 524,416 + 1,290
  assert count == 545_098


def test_grayscale_28x28_input_and_class_count():
  model, variables = _init((28, 28, 1), num_classes=7)
  assert variables['params']['Dense_0']['kernel'].shape == (7 * 7 * 64, 128)
  assert model.apply(variables, jnp.ones((3, 28, 28, 1)),
                     train=False).shape == (3, 7)


def test_dropout_only_in_training():
  model, variables = _init((16, 16, 3))
  x = jax.random.normal(jax.random.key(2), (4, 16, 16, 3))
  eval_a = model.apply(variables, x, train=False)
  eval_b = model.apply(variables, x, train=False)
  np.testing.assert_array_equal(eval_a, eval_b)
  train_a = model.apply(variables, x, train=True,
                        rngs={'dropout': jax.random.key(3)})
  train_b = model.apply(variables, x, train=True,
                        rngs={'dropout': jax.random.key(4)})
  assert not np.allclose(train_a, train_b)
