"""Where images come from and how they become batches: sources, preprocessing, augmentation, the tf.data pipeline."""
