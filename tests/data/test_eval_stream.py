"""eval_stream.py: evaluation sees every example of a split once, in its
order, the last batch partial."""

import numpy as np

from tests import helpers


def _pipeline(config, normalization=None):
  return helpers.make_pipeline(config, normalization)


def test_eval_sees_every_example_once(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(9, 8),
                                   splits=('train', 'test'))
  config = helpers.small_config(f'folder:{root}', eval_batch_size=8)
  pipeline = _pipeline(config)
  batches = list(pipeline.eval_batches('test'))
  # 17 examples -> 8 + 8 + 1, in the split's order (padding the last one is
  # device_axis.pad_batches' job).
  assert [len(b['label']) for b in batches] == [8, 8, 1]
  labels = np.concatenate([b['label'] for b in batches]).argmax(-1)
  np.testing.assert_array_equal(labels, pipeline.labels('test'))
  assert np.bincount(labels).tolist() == [9, 8]
