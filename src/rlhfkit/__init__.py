"""rlhfkit: the complete RLHF loop for encoder-decoder and decoder-only models."""

__version__ = "0.1.0"
