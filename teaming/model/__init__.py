"""Classifiers trained on what people said, or imported from elsewhere: nets, training, calibration, metrics, the
build recipe, artifacts, imported graphs, and the seam every model presents (`Model`, `load_model`).

Data flows nets -> train -> recipe (pretrain, fine-tune, calibrate, evaluate) -> artifact (a folder to ship);
imported graphs join at the seam.
"""

from teaming.model.artifact import Artifact, load_artifact, save_artifact
from teaming.model.base import Model, Outputs
from teaming.model.loader import load_model
from teaming.model.meta import ModelMeta
from teaming.model.recipe import build_model
from teaming.model.train import TrainConfig, finetune_config, pretrain_config, train

__all__ = [
    "Artifact",
    "Model",
    "ModelMeta",
    "Outputs",
    "TrainConfig",
    "build_model",
    "finetune_config",
    "load_artifact",
    "load_model",
    "pretrain_config",
    "save_artifact",
    "train",
]
