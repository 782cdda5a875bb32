"""The training algorithms, each a small package over the shared layers (see docs/architecture.md)."""
