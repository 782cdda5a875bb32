"""What every training run needs and no algorithm owns: accelerator set-up, multi-process helpers, metrics,
progress, checkpoints with resume checks, and the roll-back of a diverged update (docs/architecture.md)."""
