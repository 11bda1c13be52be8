"""Training a student: encoded splits (:mod:`.encoded`), distillation with early stopping
(:mod:`.distill`) and task metrics and speed (:mod:`.metrics`)."""

from trainables.training.distill import TrainResult, TrainState, distill_loss, train
from trainables.training.encoded import Encoded, encode_split, predict

__all__ = ["Encoded", "TrainResult", "TrainState", "distill_loss", "encode_split", "predict", "train"]
