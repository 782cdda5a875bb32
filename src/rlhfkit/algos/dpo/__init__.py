"""Direct preference optimisation from preference pairs: the losses on sequence log-probabilities (losses.py)."""
