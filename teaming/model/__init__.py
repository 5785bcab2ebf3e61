"""Classifiers trained on what people said: nets, training, calibration, metrics, the build recipe, artifacts.

Data flows nets -> train -> recipe (pretrain, fine-tune, calibrate, evaluate) -> artifact (a folder to ship).
"""

from teaming.model.artifact import Artifact, ModelMeta, load_artifact, save_artifact
from teaming.model.recipe import build_model
from teaming.model.train import TrainConfig, finetune_config, pretrain_config, train

__all__ = [
    "Artifact",
    "ModelMeta",
    "TrainConfig",
    "build_model",
    "finetune_config",
    "load_artifact",
    "pretrain_config",
    "save_artifact",
    "train",
]
