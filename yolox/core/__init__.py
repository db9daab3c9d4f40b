"""Training: the Trainer, one training step, the per-stage profile, and launch (one process, several, several
machines, or under torchrun)."""
from .launch import launch
from .trainer import NonFiniteLossError, Trainer, TrainingInterrupted

__all__ = ["launch", "Trainer", "TrainingInterrupted", "NonFiniteLossError"]
