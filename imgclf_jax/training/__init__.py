"""The pure steps, the train state and optimizer, and the training loop."""
