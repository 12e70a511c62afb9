"""What the program writes about a model and its data: tables, plots, TensorBoard events."""
