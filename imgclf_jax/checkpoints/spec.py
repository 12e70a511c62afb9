"""CheckpointSpec: how many checkpoints a training run keeps and when it
writes them (config/specs.py builds it from the config's Checkpoints keys)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class CheckpointSpec:
  """max_to_keep: the latest steps kept (the best is kept besides them);
  every_epochs: a checkpoint at the end of every this many epochs (and of
  the last); every_steps: also one every this many steps inside epochs (0:
  never)."""
  max_to_keep: int
  every_epochs: int
  every_steps: int

  def due_inside_epoch(self, step: int) -> bool:
    """Whether step `step`, inside an epoch, gets a checkpoint."""
    return bool(self.every_steps) and step % self.every_steps == 0

  def due_at_epoch_end(self, epochs_done: int, step: int) -> bool:
    """Whether the end of epoch `epochs_done` (at step `step`) gets one (the
    last epoch's always does: the caller knows which that is)."""
    return (epochs_done % self.every_epochs == 0 or
            self.due_inside_epoch(step))
