"""ReportSpec: what eval's report and predict show (config/specs.py builds it
from the config's Evaluation report and prediction keys)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class ReportSpec:
  """top_k: the top-k accuracy eval reports and the classes predict lists;
  tta: the test-time augmentation of eval, predict and export ('none',
  'flip', 'flip_translate'; tta.TTA_MODES); report_images: the images in
  the eval report's example grid and in each of its galleries."""
  top_k: int
  tta: str
  report_images: int
