"""Can a richer calibration map than one temperature close the default model's CE gap? Each map is fitted on the
model's 700 calibration items (which it never trained on), compared there by 5-fold cross-fitting, then scored
once on the held-out items. One line per map.

The maps: the shipped temperature; vector scaling (a scale and a bias per class); and the temperature with a
share `a` of the probabilities passed through the human confusion matrix P(annotator says j | true class i),
counted on the fitting items' votes. That mix predicts what an annotator would say; it is fitted to the human
votes, to the true labels, or to both.

    python experiments/calibration_maps.py models/cifar10h-default
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from teaming.datasets import load_cifar10h, load_default_test
from teaming.items import parse_items
from teaming.model import load_artifact
from teaming.model.calibration import fit_temperature, softmax
from teaming.model.metrics import accuracy, cross_entropy, ece
from teaming.model.predict import predict_logits
from teaming.model.recipe import describe_items, split_calibration

Map = Callable[[torch.Tensor], torch.Tensor]


def human_confusion(counts: np.ndarray, labels: np.ndarray, k: int) -> torch.Tensor:
    """Row i: the share of annotator votes for each class on items whose true class is i."""
    m = np.stack([counts[labels == c].sum(0) for c in range(k)]).astype(np.float64)
    return torch.from_numpy(m / m.sum(1, keepdims=True))


def fit_map(kind: str, z: torch.Tensor, soft: torch.Tensor, onehot: torch.Tensor, confusion: torch.Tensor) -> Map:
    """Fit one map on the calibration logits: temperature (the library's fit, as shipped), or by L-BFGS vector
    scaling or mix-{human,truth,both}."""
    if kind == "temperature":
        t = fit_temperature(z, soft.numpy())
        return lambda x: torch.from_numpy(softmax(x, t))
    k = z.shape[1]
    if kind == "vector":  # a scale and a bias per class
        p = {"log_w": torch.zeros(k, dtype=torch.float64, requires_grad=True)}
        p["b"] = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    else:
        p = {"log_t": torch.zeros((), dtype=torch.float64, requires_grad=True)}
        p["logit_a"] = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    weights = {"mix-human": (1, 0), "mix-truth": (0, 1), "mix-both": (1, 1)}.get(kind, (1, 0))

    def apply(x: torch.Tensor) -> torch.Tensor:
        if kind == "vector":
            logits = x * p["log_w"].exp() + p["b"]
        else:
            logits = x / p["log_t"].exp()
        q = F.softmax(logits, 1)
        if kind.startswith("mix"):
            a = torch.sigmoid(p["logit_a"])
            q = (1 - a) * q + a * (q @ confusion)
        return q

    opt = torch.optim.LBFGS(list(p.values()), lr=0.5, max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        log_q = apply(z).clamp_min(1e-12).log()
        loss = -(weights[0] * (soft * log_q).sum(1) + weights[1] * (onehot * log_q).sum(1)).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda x: apply(x).detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="models/cifar10h-default")
    ap.add_argument("--train-items", default="0:7000", help="the items the model was trained and calibrated on")
    ap.add_argument("--items", default="7000:10000", help="held-out items to score")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the 5-fold cross-fitting")
    args = ap.parse_args()
    art, test, human = load_artifact(args.model), load_default_test(), load_cifar10h()
    train_items = parse_items(args.train_items, len(test))
    fit_pos, cal_pos = split_calibration(len(train_items), 0.1, art.meta.training["config"]["seed"])
    fit, cal = train_items[fit_pos], train_items[cal_pos]
    if describe_items(cal) != art.meta.data["calibration_items"]:
        raise SystemExit(f"these are not {args.model}'s calibration items: pass its --train-items")
    held = parse_items(args.items, len(test))
    k = len(test.classes)
    confusion = human_confusion(human.subset(fit).counts, test.labels[fit], k)

    def inputs(idx: np.ndarray) -> tuple[torch.Tensor, ...]:
        z = predict_logits(art.net, test.images[torch.from_numpy(idx)], tta=art.meta.tta).double()
        y = torch.from_numpy(test.labels[idx]).long()
        return z, torch.from_numpy(human.subset(idx).soft()), F.one_hot(y, k).double()

    zc, sc, yc = inputs(cal)
    zh, sh, yh = inputs(held)
    print(f"{args.model}: calibration items {describe_items(cal)}, held-out {describe_items(held)}", flush=True)
    for kind in ("temperature", "vector", "mix-human", "mix-truth", "mix-both"):
        cv = []
        for rep in range(args.repeats):
            perm = np.random.default_rng(rep).permutation(len(cal))
            for f in range(5):
                te, tr = perm[f::5], np.setdiff1d(perm, perm[f::5])
                q = fit_map(kind, zc[tr], sc[tr], yc[tr], confusion)(zc[te]).numpy()
                cv.append((cross_entropy(q, sc[te].numpy()), cross_entropy(q, yc[te].numpy())))
        cv_ce, cv_nll = np.mean(cv, 0)
        q = fit_map(kind, zc, sc, yc, confusion)(zh).numpy()
        y = test.labels[held]
        print(
            f"{kind:12s} calibration-cv human_ce {cv_ce:.4f} nll {cv_nll:.4f} | held-out human_ce "
            f"{cross_entropy(q, sh.numpy()):.4f} ece {ece(q, y):.4f} nll {cross_entropy(q, yh.numpy()):.4f} "
            f"accuracy {accuracy(q, y):.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
