"""`load_model`: any model folder, our net or an imported graph, as the model seam (`teaming.model.base.Model`),
chosen by model.json's `kind`."""

from __future__ import annotations

from pathlib import Path

import torch

from teaming.model.artifact import load_artifact
from teaming.model.base import Model
from teaming.model.imported import BACKENDS_OF, load_graph_model
from teaming.model.meta import load_meta
from teaming.model.runtime import BACKENDS, REDUCED, choose, failed_check, passed


def load_model(directory: str | Path, device: str | torch.device = "cpu", backend: str | None = None) -> Model:
    """The model in `directory`, on `device` (ONNX graphs run on the CPU), predicting with `backend` when given.
    FileNotFoundError for a folder that holds no model, ValueError for a model.json that does not fit."""
    directory = Path(directory)
    meta = load_meta(directory)
    if meta.kind == "teaming":
        return load_artifact(directory, device, backend)
    return load_graph_model(directory, device, backend)


def serving_backend(setting: str, meta, device: torch.device) -> tuple[str, str]:
    """(backend, why) for a TEAMING_BACKEND setting on this device: our nets choose by `runtime.choose`; an imported
    graph runs as given under 'auto', or as a backend of its kind that passed its check here. ValueError with the
    fix when the setting cannot serve."""
    if meta.kind == "teaming":
        name, why = choose(setting, device, meta.backends)
        if name in BACKENDS_OF["onnx"] + BACKENDS_OF["torchscript"] and name not in BACKENDS:
            raise ValueError(f"TEAMING_BACKEND={name} is for imported graphs; this net runs as {', '.join(BACKENDS)}")
        if name in REDUCED and not passed(meta.backends.get(name), device):
            raise ValueError(f"TEAMING_BACKEND={name} {failed_check(meta.backends.get(name), device)}")
        return name, why
    own = BACKENDS_OF[meta.kind]
    if setting == "auto":
        return own[0], f"auto: the imported {meta.kind} graph as given"
    if setting not in own:
        raise ValueError(f"TEAMING_BACKEND={setting}: an imported {meta.kind} graph runs as {' or '.join(own)}")
    if setting != own[0] and not passed(meta.backends.get(setting), device):
        raise ValueError(f"TEAMING_BACKEND={setting} {failed_check(meta.backends.get(setting), device)}")
    return setting, "as set"
