"""metrics.py: the metrics accumulated over steps."""

import jax.numpy as jnp
import numpy as np

from imgclf_jax import metrics as metrics_lib


def test_accumulator_sums_every_step_including_the_newest():
  accumulator = metrics_lib.Accumulator()
  assert accumulator.result() is None
  sums = [(1.0, 2.0, 4.0), (3.0, 1.0, 4.0), (5.0, 4.0, 8.0)]
  for i, (loss, correct, count) in enumerate(sums):
    accumulator.add(metrics_lib.Metrics.from_sums(
        jnp.float32(loss), jnp.float32(correct), jnp.float32(count)))
    values = accumulator.result().compute()
    seen = sums[:i + 1]
    total = sum(s[2] for s in seen)
    np.testing.assert_allclose(values['loss'], sum(s[0] for s in seen) / total)
    np.testing.assert_allclose(values['accuracy'],
                               sum(s[1] for s in seen) / total)
