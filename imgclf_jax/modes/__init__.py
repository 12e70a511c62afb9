"""The command modes: dispatch on --mode, eval, predict, export, and the checkpoint loader they share."""
