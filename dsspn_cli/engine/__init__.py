"""Training, evaluation and prediction loops, checkpoints, metrics."""
