"""`teaming import`: a classifier trained elsewhere (ONNX or TorchScript) made ready to serve with people.

In named stages, each recorded in model.json and on the card with its figures: the graph opened and its input
contract read, the labelled photos loaded, the contract checked on a forward pass, the items split by id
(calibration, guard, policy, report), the temperature fitted, the familiarity guard fitted, the deferral policy
fitted, and the reduced-precision backend checked against the graph as given. Every figure on the card is
measured on the report split, which nothing was fitted on.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from teaming._validation import DataError, ModelError
from teaming.data import ImageSet, load_image_folder, stratified_order
from teaming.labels import HumanLabels, majority, read_classes
from teaming.model.calibration import fit_temperature, softmax
from teaming.model.familiarity import FamiliarityGuard, auroc, choose_logit_guard
from teaming.model.figures import reliability_png
from teaming.model.imported import GRAPH_FILES, GraphModel, check_reduced_backend, graph_kind, open_runner, sha256
from teaming.model.meta import GraphSpec, ModelMeta
from teaming.model.metrics import evaluate_probs
from teaming.model.outliers import synthetic_outliers
from teaming.model.recipe import fit_problems
from teaming.policy import CertifiedPolicy, DeferralPolicy, PolicyError, ThresholdPolicy
from teaming.preprocess import InputContract, parse_preprocess, to_input
from teaming.team import TeamData, team_warnings

SHARES = {"calibration": 0.2, "guard": 0.2, "policy": 0.3, "report": 0.3}
MIN_ITEMS = {"calibration": 30, "guard": 30, "policy": 50, "report": 50}
DRAWS = 20  # sampled human answers per item, as fit-policy draws them


@dataclass(kw_only=True)
class ImportConfig:
    """What `teaming import` was asked: the graph, where to write, the labelled photos, and the options."""

    model_file: Path
    out: Path
    images: Path
    labels: Path
    classes: Path | None = None
    preprocess: str | None = None
    features: str | None = None
    name: str | None = None
    certify: float | None = None
    seed: int = 0
    force: bool = False
    command: str = ""


@dataclass
class Labelled:
    """The photos, their votes, the reference label of each, and people's answers where the reference does not
    come from those same answers (else None: the policy is then certified on model risk)."""

    images: ImageSet
    votes: HumanLabels
    y: np.ndarray
    human_draws: np.ndarray | None
    reference: str


@dataclass
class Imported:
    """The imported model ready to save, its policy, and what each stage found (for the card and the console)."""

    model: GraphModel
    policy: DeferralPolicy
    steps: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    int8: Path | None = None


def open_graph(cfg: ImportConfig) -> tuple[GraphSpec, str, object, InputContract]:
    """The graph's spec, kind, runner and input contract (its size read off the graph when --preprocess gives
    none); ModelError for a file that is no graph, or a graph that wants another input."""
    if not cfg.model_file.is_file():
        raise ModelError(f"no model file at {cfg.model_file}")
    kind = graph_kind(cfg.model_file)
    spec = GraphSpec(file=GRAPH_FILES[kind], source=str(cfg.model_file), features=cfg.features)
    runner = open_runner(cfg.model_file, kind, spec)
    contract = parse_preprocess(cfg.preprocess, runner.declared_size())
    runner.check_input(contract.size)
    if kind == "onnx":
        spec = spec.model_copy(update={"input": runner.input, "logits": runner.logits})
    return spec.model_copy(update={"sha256": sha256(cfg.model_file)}), kind, runner, contract


def load_labelled(cfg: ImportConfig, contract: InputContract, seed: int) -> Labelled:
    """The photos shaped by the contract and their votes. In an ImageFolder the folder is the reference and a
    sampled vote is what a person answers; in a flat folder with three or more votes per item, one vote (drawn)
    is the person and the majority of the others the reference; otherwise the majority vote is the reference and
    there is no independent person."""
    classes = read_classes(cfg.classes) if cfg.classes else None
    images = load_image_folder(cfg.images, contract, classes)
    votes = HumanLabels.from_csv(cfg.labels, images.classes, ids=images.ids)
    rng = np.random.default_rng(seed)
    if images.labels is not None:
        draws = np.stack([votes.sample(np.random.default_rng(seed + k)) for k in range(DRAWS)])
        return Labelled(images, votes, images.labels, draws, "the class folders; a person is one vote drawn")
    if votes.votes.min() >= 3:
        person = votes.sample(rng)
        others = votes.counts.copy()
        others[np.arange(len(person)), person] -= 1
        reference = "the majority of the other votes; a person is one vote drawn"
        return Labelled(images, votes, majority(others), person[None], reference)
    return Labelled(images, votes, votes.majority(), None, "the majority vote (too few votes for a separate person)")


def check_outputs(runner, images: ImageSet, contract: InputContract) -> str:
    """'logits' or 'probabilities' from a forward pass on a few labelled photos; ModelError when the graph refuses
    them or its outputs are not one score per class."""
    batch = images.images[:8]
    try:
        scores, feats = runner(to_input(batch, contract))
    except ModelError:
        raise
    except Exception as err:  # the graph's own runtime errors: a shape, a type, a layer it cannot run
        line = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        s = contract.size
        raise ModelError(f"the graph refused a batch of {len(batch)} x 3 x {s} x {s} images: {line}") from None
    c = len(images.classes)
    if tuple(scores.shape) != (len(batch), c):
        raise ModelError(
            f"the graph's outputs are {' x '.join(map(str, scores.shape))}, not N x {c}: one score per class "
            f"({c} classes: {', '.join(images.classes[:5])}{', ...' if c > 5 else ''})"
        )
    if feats is not None and (feats.ndim != 2 or len(feats) != len(batch)):
        raise ModelError(f"the features output is {tuple(feats.shape)}, not N x D (one vector per image)")
    p = scores.double()
    is_probs = bool((p >= 0).all() and torch.allclose(p.sum(1), torch.ones(len(p), dtype=p.dtype), atol=1e-3))
    return "probabilities" if is_probs else "logits"


def split_items(y: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Disjoint positions for calibration, guard, policy and report, each stratified by reference label;
    DataError naming the number needed when there are too few."""
    n = len(y)
    sizes = {k: int(n * share) for k, share in SHARES.items()}
    if any(sizes[k] < MIN_ITEMS[k] for k in SHARES):
        need = max(int(np.ceil(MIN_ITEMS[k] / SHARES[k])) for k in SHARES)
        mins = ", ".join(f"{k} {v}" for k, v in MIN_ITEMS.items())
        raise DataError(
            f"{n} labelled photos are too few to import: it needs at least {need}, so that each step has items of "
            f"its own (at least: {mins})"
        )
    order, out, start = stratified_order(y, seed), {}, 0
    for k, size in sizes.items():
        out[k] = np.sort(order[start : start + size] if k != "report" else order[start:])
        start += size
    return out


def forward(model: GraphModel, images: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, features or None) for many images, a chunk at a time with a progress bar."""
    parts = [model.raw(c) for c in tqdm(images.split(256), desc=what, unit="chunk", leave=False, disable=None)]
    feats = None if parts[0][1] is None else torch.cat([p[1] for p in parts])
    return torch.cat([p[0] for p in parts]), feats


def import_model(cfg: ImportConfig, say: Callable[[str], None] = print) -> Imported:
    """Run every stage; ModelError / DataError / PolicyError (one line each) when one cannot go on."""
    spec, kind, runner, contract = open_graph(cfg)
    say(f"graph: {kind}, input {contract.describe()}")
    data = load_labelled(cfg, contract, cfg.seed)
    spec = spec.model_copy(update={"outputs": check_outputs(runner, data.images, contract)})
    splits = split_items(data.y, cfg.seed)
    sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
    say(f"{len(data.y)} labelled photos of {len(data.images.classes)} classes; split by id: {sizes}")
    meta = ModelMeta(
        name=cfg.name or cfg.out.name,
        classes=data.images.classes,
        kind=kind,
        input_size=contract.size,
        input=contract,
        graph=spec,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    model = GraphModel(meta, runner)
    logits, feats = forward(model, data.images.images, "forward")
    steps = {"Contract check": _contract_text(spec, data)}
    steps["Calibration"] = calibrate(model, logits, data, splits, cfg.force)
    say(f"calibration: {steps['Calibration']}")
    steps["Familiarity guard"] = fit_guard(model, logits, feats, data, splits, cfg.seed)
    say(f"guard: {steps['Familiarity guard']}")
    policy, steps["Policy"], warnings = fit_policy(model, logits, feats, data, splits, cfg)
    say(f"policy: {steps['Policy']}")
    imported = Imported(model, policy, steps, warnings)
    rep, cal = (data.images.images[torch.from_numpy(splits[k])] for k in ("report", "calibration"))
    imported.int8 = check_reduced_backend(model, policy, rep, data.y[splits["report"]], cal, cfg.model_file)
    meta.data = _data_record(cfg, data, splits)
    meta.training = {"import": {"steps": steps}, "command": cfg.command}
    return imported


def _contract_text(spec: GraphSpec, data: Labelled) -> str:
    said = "probabilities (rows summing to 1), turned back into logits" if spec.outputs == "probabilities" else "logits"
    return (
        f"a forward pass on 8 labelled photos gave N x {len(data.images.classes)} {said}; reference: {data.reference}"
    )


def calibrate(model: GraphModel, logits: torch.Tensor, data: Labelled, splits: dict, force: bool) -> str:
    """Temperature scaling on the calibration split; before/after figures on the report split; the refusals of
    `teaming train` (chance-level accuracy, an absurd temperature) unless forced."""
    cal, rep = splits["calibration"], splits["report"]
    model.meta.temperature = fit_temperature(logits[cal], data.y[cal])
    counts = data.votes.counts[rep] if data.votes.votes[rep].mean() > 1 else None
    metrics = {
        name: evaluate_probs(softmax(logits[rep], t), data.y[rep], counts)
        for name, t in (("uncalibrated", 1.0), ("calibrated", model.meta.temperature))
    }
    model.meta.metrics = metrics
    model.meta.data["eval_items"] = f"the report split ({len(rep)} items)"
    problems = fit_problems(model.meta, len(rep))
    if problems and not force:
        raise ModelError(f"not imported: {'; '.join(problems)}. Check the classes and --preprocess, or pass --force")
    before, after = metrics["uncalibrated"], metrics["calibrated"]
    model.figures["reliability.png"] = reliability_png(
        {"as given": softmax(logits[rep], 1.0), "calibrated": softmax(logits[rep], model.meta.temperature)},
        data.y[rep],
        f"{model.meta.name}: report split ({len(rep)} items)",
    )
    ce = (
        f", cross-entropy to the votes {before['human_ce']:.3f} -> {after['human_ce']:.3f}"
        if counts is not None
        else ""
    )
    return (
        f"T = {model.meta.temperature:.3f} fitted on {len(cal)} items; on the {len(rep)} report items accuracy "
        f"{after['accuracy']:.2%}, ECE {before['ece']:.4f} -> {after['ece']:.4f}{ce}"
    )


def fit_guard(model: GraphModel, logits, feats, data: Labelled, splits: dict, seed: int) -> str:
    """The familiarity guard on the guard split against synthetic outliers made from it: on the named features,
    else the better of energy and max-logit; its AUROC against outliers made from the report split."""
    g, rep = splits["guard"], splits["report"]
    out_g = forward(model, synthetic_outliers(data.images.images[g], len(g), seed), "outliers")
    out_r = forward(model, synthetic_outliers(data.images.images[rep], len(rep), seed + 1), "outliers")
    if feats is not None:
        guard = FamiliarityGuard.fit(feats[g], data.y[g], len(data.images.classes), out_g[1])
        model.meta.guard, how = "features", f"on the features output {model.meta.graph.features!r}"
        held = auroc(guard.score(feats[rep]), guard.score(out_r[1]))
    else:
        guard, aucs = choose_logit_guard(logits[g].numpy(), out_g[0].numpy())
        model.meta.guard = guard.kind
        how = (
            f"on the logits' {guard.kind} (AUROC on the guard split: "
            + ", ".join(f"{k} {v:.3f}" for k, v in aucs.items())
            + "; no features output was named)"
        )
        held = auroc(guard.score(logits[rep]), guard.score(out_r[0]))
    model.guard = guard
    return (
        f"fitted {how} on {len(g)} items; tells synthetic outliers from the report items with AUROC {held:.3f}"
        f"; {probes_deferred(model, logits, feats, splits['policy'], data.images.images[g])}"
    )


def probes_deferred(model: GraphModel, logits, feats, policy_items: np.ndarray, familiar: torch.Tensor) -> str:
    """How many photos of none of the classes (scikit-learn's and scikit-image's photos, textures and faces, and
    noise) lie past the limit a policy would set at its default quantile of the policy items: what the card tells
    a user to expect of the guard, on images it was not fitted against."""
    from teaming.policy.base import UNFAMILIAR_QUANTILE
    from teaming.probes import unfamiliar_sets

    src = feats if model.guard.reads == "features" else logits
    limit = np.quantile(model.guard.score(src[policy_items]), UNFAMILIAR_QUANTILE)
    sets = unfamiliar_sets(familiar, n=100, size=model.contract.size)
    shares = {}
    for name in ("photos", "textures", "faces", "noise"):
        if name in sets:
            out = model.outputs(sets[name])
            shares[name] = float((out.unfamiliarity > limit).mean())
    said = ", ".join(f"{k} {v:.0%}" for k, v in shares.items())
    return f"at the policy's {UNFAMILIAR_QUANTILE:g} quantile it defers these probes of none of the classes: {said}"


def _team(model: GraphModel, logits, feats, data: Labelled, idx: np.ndarray) -> TeamData:
    out_probs = softmax(logits[idx], model.meta.temperature)
    unf = None
    if model.guard is not None:
        unf = model.guard.score((feats if model.guard.reads == "features" else logits)[idx])
    human = data.human_draws[:, idx] if data.human_draws is not None else data.y[idx][None]
    counts = data.votes.counts[idx] if data.human_draws is not None and data.human_draws.shape[0] > 1 else None
    return TeamData(out_probs, human[0], data.y[idx], data.images.classes, counts, human, unf, idx)


def fit_policy(model: GraphModel, logits, feats, data: Labelled, splits: dict, cfg: ImportConfig):
    """Paired t-tests on the policy split when people's answers are known apart from the reference; else Learn
    then Test on model risk (`--certify`, or the highest of half, three quarters and all of the model's error
    that certifies). Scored on the report split."""
    fit, rep = _team(model, logits, feats, data, splits["policy"]), _team(model, logits, feats, data, splits["report"])
    if data.human_draws is not None:
        policy = ThresholdPolicy(random_state=cfg.seed).fit(
            fit.probs, fit.y, fit.human, fit.classes, unfamiliarity=fit.unfamiliarity
        )
        how = "the t-test threshold rule (people's answers known)"
    else:
        err = 1 - float((fit.probs.argmax(1) == fit.y).mean())
        targets = [cfg.certify] if cfg.certify else [round(1 - err * f, 4) for f in (0.5, 0.75, 1.0)]
        policy = _certify(fit, targets)
        how = f"Learn then Test: auto-answered items at least {policy.target_accuracy:.2%} right (95%)"
    policy.model_ = {
        "name": model.meta.name,
        "path": str(cfg.out),
        "created": model.meta.created,
        "fitted_on": f"the policy split of {cfg.images} ({len(fit.y)} items)",
        "images": str(cfg.images),
        "fitted_ids": [data.images.ids[i] for i in splits["policy"]],
        "reviewers": 1,
        "command": cfg.command,
    }
    defer = policy.decide(rep.probs, unfamiliarity=rep.unfamiliarity)
    auto = (rep.probs.argmax(1) == rep.y)[~defer]
    text = (
        f"{how}, threshold {policy.threshold_:.2f}; on the report split it defers {defer.mean():.1%}"
        f" ({(policy.reasons(rep.probs, unfamiliarity=rep.unfamiliarity) == 'unfamiliar').mean():.1%} as unfamiliar), "
        f"answers {auto.mean() if len(auto) else float('nan'):.2%} of the rest right"
    )
    if data.human_draws is not None:
        text += (
            f"; team {rep.human_accuracy(defer).mean:.2%} against the model alone "
            f"{(rep.probs.argmax(1) == rep.y).mean():.2%} and a person alone {rep.human_accuracy().mean:.2%}"
        )
    return policy, text, team_warnings(rep, policy)


def _certify(fit: TeamData, targets: list[float]) -> CertifiedPolicy:
    for target in targets:
        try:
            return CertifiedPolicy(target_accuracy=target).fit(
                fit.probs, fit.y, None, fit.classes, unfamiliarity=fit.unfamiliarity
            )
        except PolicyError:
            continue
    raise PolicyError(
        f"no threshold certifies {targets[-1]:.2%} accuracy on the {len(fit.y)} policy items: "
        "add labelled photos, or give a lower --certify"
    )


def _data_record(cfg: ImportConfig, data: Labelled, splits: dict) -> dict:
    return {
        "images": str(cfg.images),
        "labels": f"votes from {cfg.labels} ({int(data.votes.votes.sum())} votes on {len(data.votes)} items)",
        "reference": data.reference,
        "eval_items": f"the report split ({len(splits['report'])} items)",
        "splits": {k: [data.images.ids[i] for i in v] for k, v in splits.items()},
    }
