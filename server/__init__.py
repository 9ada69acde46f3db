"""fedkd ServerApp: the distillation strategy, checkpoints, metrics."""
