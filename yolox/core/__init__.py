"""Training: the Trainer (the loop) and its parts (stop request, time budget, data stream, metric writers,
checkpointer, per-stage profile, early stopping, frozen layers, results.csv), one training step, and launch (one
process, several, several machines, or under torchrun)."""
from .early_stopping import EarlyStopping, RunExtension
from .eval_report import EvalReportPart, save_eval_report
from .freeze import FrozenLayers, freeze_layers
from .launch import launch
from .parts import TrainerPart
from .results_table import ResultsTable, read_results
from .trainer import NonFiniteLossError, Trainer, TrainingInterrupted

__all__ = ["launch", "Trainer", "TrainerPart", "TrainingInterrupted", "NonFiniteLossError", "EarlyStopping",
           "RunExtension", "FrozenLayers", "freeze_layers", "ResultsTable", "read_results", "EvalReportPart",
           "save_eval_report"]
