"""Fine-tuning recipe: ``train(TrainConfig)``; datasets, augmentations, CosFace head, expert-load statistics."""

from .config import TrainConfig
from .errors import DatasetError, TrainError
from .trainer import TrainResult, train

__all__ = ["DatasetError", "TrainConfig", "TrainError", "TrainResult", "train"]
