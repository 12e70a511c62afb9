"""spec.py: which steps get a checkpoint inside an epoch and at its end."""

from imgclf_jax.checkpoints.spec import CheckpointSpec


def test_checkpoints_every_epochs_and_every_steps():
  spec = CheckpointSpec(max_to_keep=3, every_epochs=2, every_steps=3)
  assert [s for s in range(1, 10) if spec.due_inside_epoch(s)] == [3, 6, 9]
  # Epochs of 4 steps: every second epoch's end, and any end on a multiple
  # of 3 steps.
  assert [e for e in range(1, 7) if spec.due_at_epoch_end(e, 4 * e)] == [
      2, 3, 4, 6]
  never = CheckpointSpec(max_to_keep=3, every_epochs=1, every_steps=0)
  assert not any(never.due_inside_epoch(s) for s in range(1, 10))
  assert all(never.due_at_epoch_end(e, 4 * e) for e in range(1, 5))
