"""Per-image predictions: the top classes of each image, as a CSV file.

--mode=predict writes them for image files, --mode=eval for a split.
"""

import csv

import numpy as np

from imgclf_jax import whole_file


def top_classes(probs, k: int) -> np.ndarray:
  """[N, min(k, K)] class indices, most probable first (ties: lower index)."""
  probs = np.asarray(probs)
  return np.argsort(-probs, axis=1, kind='stable')[:, :min(k, probs.shape[1])]


def write_predictions_csv(path, outputs, class_names, top_k: int, files=None):
  """One row per example: index, file, true, predicted, confidence, correct,
  and the top-k classes with their probabilities (written whole, or a
  UserError: whole_file.py)."""
  probs, confidence = outputs['probs'], outputs['confidence']
  top = top_classes(probs, top_k)
  k = top.shape[1]
  with whole_file.replacing(path, 'w', newline='') as f:
    out = csv.writer(f)
    out.writerow(['index', 'file', 'true', 'predicted', 'confidence',
                  'correct'] + [f'top{j + 1}' for j in range(k)])
    for i in range(len(probs)):
      out.writerow(
          [i, '' if files is None else files[i],
           class_names[outputs['label'][i]],
           class_names[outputs['predicted'][i]], f'{confidence[i]:.6f}',
           int(outputs['label'][i] == outputs['predicted'][i])] +
          [f'{class_names[c]}:{probs[i, c]:.6f}' for c in top[i]])
