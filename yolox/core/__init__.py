"""Training: the Trainer (the loop) and its parts (stop request, time budget, data stream, metric writers,
checkpointer, per-stage profile), one training step, and launch (one process, several, several machines, or under
torchrun)."""
from .launch import launch
from .parts import TrainerPart
from .trainer import NonFiniteLossError, Trainer, TrainingInterrupted

__all__ = ["launch", "Trainer", "TrainerPart", "TrainingInterrupted", "NonFiniteLossError"]
