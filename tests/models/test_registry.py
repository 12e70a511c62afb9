import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imgclf_jax.config import specs
from imgclf_jax.models import registry
from tests import helpers


def _init(image_shape, num_classes=10):
  model = registry.create_model(
      specs.model_spec(helpers.small_config('cifar10'), num_classes))
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


def _half_and_full(model_name):
  """The same parameters applied in float32 and in bfloat16."""
  dropout = 0.5 if model_name in registry.DROPOUT_MODELS else 0.0
  configs = [helpers.small_config('cifar10', model=model_name,
                                  dropout_rate=dropout, half_precision=half)
             for half in (False, True)]
  full, half = (registry.create_model(specs.model_spec(c, 10))
                for c in configs)
  init = jax.jit(full.init, static_argnames='train')
  variables = init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False)
  return full, half, variables


@pytest.mark.slow
@pytest.mark.parametrize('name', list(registry.MODELS))
def test_half_precision_computes_in_bfloat16_with_float32_parameters(
    name, monkeypatch):
  if name == 'efficientnet_lite0':  # its blocks, fewer of them
    helpers.small_efficientnet(monkeypatch)
  full, half, variables = _half_and_full(name)
  # Same parameter tree, float32, whatever the compute dtype.
  half_vars = jax.eval_shape(lambda: half.init(
      jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False))
  assert jax.tree.map(lambda p: (p.shape, p.dtype), half_vars) == \
      jax.tree.map(lambda p: (p.shape, p.dtype), variables)
  x = jax.random.normal(jax.random.key(1), (8, 32, 32, 3))
  want = jax.jit(lambda v, x: full.apply(v, x, train=False))(variables, x)
  half_apply = jax.jit(lambda v, x: half.apply(v, x, train=False))
  got = half_apply(variables, x)
  assert got.dtype == jnp.float32  # logits come back float32 for the loss
  # bfloat16 keeps 8 mantissa bits: close, but not float32-equal.
  assert not np.array_equal(got, want)
  np.testing.assert_allclose(got, want, atol=0.05 * float(
      jnp.abs(want).max()))
  hlo = half_apply.lower(variables, x).as_text()
  # The convolutions and matmuls themselves run in bfloat16.
  heavy = [line for line in hlo.splitlines()
           if 'convolution' in line or 'dot_general' in line]
  assert heavy and all('bf16' in line for line in heavy), heavy


@pytest.mark.slow
def test_half_precision_gradients_are_float32_and_close():
  full, half, variables = _half_and_full('cnn')
  x = jax.random.normal(jax.random.key(1), (16, 32, 32, 3))
  labels = jax.nn.one_hot(jnp.arange(16) % 10, 10)

  def grads(model):
    def loss(params):
      logits = model.apply({'params': params}, x, train=False)
      return -(jax.nn.log_softmax(logits) * labels).sum(-1).mean()
    return jax.jit(jax.grad(loss))(variables['params'])

  want, got = grads(full), grads(half)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert g.dtype == jnp.float32
    # Direction agrees to within bfloat16's rounding.
    cosine = float((g * w).sum() / (jnp.linalg.norm(g) * jnp.linalg.norm(w)))
    assert cosine > 0.99


def test_example_dropout_mask_depends_on_the_example_id_only():
  dropout = registry.ExampleDropout(rate=0.5)
  x = jnp.ones((6, 1000))
  rngs = {'dropout': jax.random.key(5)}
  whole = dropout.apply({}, x, jnp.arange(6), deterministic=False, rngs=rngs)
  # Examples 4 and 1 on their own (another slice, device or order) get the
  # masks they get in the whole batch.
  part = dropout.apply({}, x[:2], jnp.array([4, 1]), deterministic=False,
                       rngs=rngs)
  np.testing.assert_array_equal(part, whole[jnp.array([4, 1])])
  # Kept values are scaled by 1 / (1 - rate); about half are kept; masks of
  # different examples differ.
  assert set(np.unique(whole).tolist()) == {0.0, 2.0}
  assert 0.45 < float((whole > 0).mean()) < 0.55
  assert not np.array_equal(whole[0], whole[1])
  np.testing.assert_array_equal(
      dropout.apply({}, x, jnp.arange(6), deterministic=True), x)


@pytest.mark.parametrize('model, conv_impl, backend, expected', [
    ('cnn', 'auto', 'cpu', 'FastConv'),
    ('cnn', 'auto', 'gpu', 'Conv'),
    ('cnn', 'auto', 'tpu', 'Conv'),
    ('cnn', 'xla', 'cpu', 'Conv'),
    ('cnn', 'fast', 'gpu', 'FastConv'),
    ('cnn_plain', 'auto', 'cpu', 'Conv'),
    ('fast_cifar', 'auto', 'cpu', 'FastConv'),
    ('fast_cifar', 'auto', 'gpu', 'Conv'),
    ('resnet18', 'auto', 'cpu', 'Conv'),     # strided convs: XLA's only
    ('resnet18', 'fast', 'cpu', 'Conv'),
])
def test_convolutions_by_backend(monkeypatch, model, conv_impl, backend,
                                 expected):
  monkeypatch.setattr(jax, 'default_backend', lambda: backend)
  config = helpers.small_config('cifar10', model=model, conv_impl=conv_impl,
                                dropout_rate=0.5 if model.startswith('cnn')
                                else 0.0)
  built = registry.create_model(specs.model_spec(config, 10))
  assert registry.conv_impl(config.model, config.conv_impl) == (
      'fast' if expected == 'FastConv' else 'xla')
  if model != 'resnet18':
    assert built.conv.__name__ == expected
