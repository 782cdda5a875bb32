"""Direct preference optimisation from preference pairs: the losses on sequence log-probabilities (losses.py),
pairs tokenised for the policy's architecture and padded into batches (pairs.py), and the summed log-probs of
both responses, the reference's computed once and cached under the run folder (logprobs.py)."""
