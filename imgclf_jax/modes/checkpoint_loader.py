"""One way to load a checkpoint for inference: eval, predict and the report.

    loaded = checkpoint_loader.load(workdir, step, config, mode='eval')
    loaded.state, loaded.config, loaded.report, loaded.class_names,
    loaded.normalization

The model, its preprocessing and the class names come from the checkpoint;
`config` (optional) gives the keys `mode` takes from the command line
(keys.KEY_ORIGINS).
"""

import dataclasses
import os

import jax

from imgclf_jax.checkpoints import checkpoint_store
from imgclf_jax.config import resolve
from imgclf_jax.config import specs
from imgclf_jax.models import registry
from imgclf_jax.report.spec import ReportSpec
from imgclf_jax.training import train_state as train_state_lib


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """A restored checkpoint, ready for inference."""
  step: int
  state: train_state_lib.TrainState
  config: object                  # the resolved ConfigDict of `mode`
  report: ReportSpec              # its top_k, tta and report_images
  class_names: tuple[str, ...]
  normalization: dict             # {'mean': [C], 'std': [C]}
  image_shape: tuple[int, ...]    # (S, S, C), as the model was trained
  metadata: dict                  # everything the checkpoint recorded
  directory: str                  # <workdir>/checkpoints


def load(workdir: str, step=None, config=None, mode: str = 'eval',
         set_keys=None) -> Checkpoint:
  """Restores checkpoint `step` (None/'latest', 'best' or a number) of
  `workdir` for `mode` ('eval' or 'predict'); `set_keys`: the keys of
  `config` set on the command line (resolve.for_inference)."""
  store = checkpoint_store.CheckpointStore(os.path.abspath(workdir))
  try:
    step, metadata = store.restore_metadata(step)
    resolved = resolve.for_inference(
        metadata['config'], config, mode, jax.local_device_count(),
        set_keys)
    class_names = tuple(metadata['class_names'])
    image_shape = tuple(metadata['image_shape'])
    model_spec = specs.model_spec(resolved, len(class_names))
    model = registry.create_model(model_spec)
    target = train_state_lib.create_train_state(
        jax.random.key(0), model, image_shape, specs.optim_spec(resolved), 1,
        head=registry.HEADS.get(model_spec.name))
    state = store.restore_state(step, target)
  finally:
    store.close()
  return Checkpoint(step=step, state=state, config=resolved,
                    report=specs.report_spec(resolved),
                    class_names=class_names,
                    normalization=metadata['normalization'],
                    image_shape=image_shape, metadata=metadata,
                    directory=store.directory)
