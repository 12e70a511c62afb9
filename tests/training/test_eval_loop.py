"""eval_loop.py: --mode=eval's pass over a split is training's validation
pass (on the session's report run, `run` in tests/conftest.py)."""

import json
import os

import numpy as np
import pytest

from imgclf_jax.modes import evaluate

pytestmark = pytest.mark.slow


def test_eval_loss_and_accuracy_are_the_training_loops(run):
  # The report's pass computes the same device-side sums as validation does.
  _, workdir, _, _ = run
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    last = [json.loads(line) for line in f][-1]
  result = evaluate.evaluate_checkpoint(None, workdir)
  assert result['split'] == 'validation'
  assert result['accuracy'] == last['validation_accuracy']
  np.testing.assert_allclose(result['loss'], last['validation_loss'], rtol=1e-6)
