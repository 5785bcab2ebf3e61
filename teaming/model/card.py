"""MODEL_CARD.md, rendered from the same metadata model.json stores, so the two never disagree: what the model
is and takes, how it was made or imported, what it scored, how each backend compares, and its limits."""

from __future__ import annotations

from teaming.model.meta import ModelMeta

METRIC_NAMES = {
    "accuracy": "Accuracy (the images' own labels)",
    "accuracy_vs_majority": "Accuracy against the human majority label",
    "human_ce": "Cross-entropy to human labels (nats)",
    "nll": "NLL of the hard label (nats)",
    "ece": "ECE (15 bins)",
    "second_best_accuracy": "Second-best accuracy",
    "multilabel_accuracy": "Multi-label accuracy",
    "fgsm_accuracy": "FGSM accuracy (l_inf 4/255)",
    "fgsm_loss": "FGSM loss (l_inf 4/255)",
}


def metrics_table(metrics: dict[str, dict]) -> str:
    """A Markdown table, one column per evaluation (e.g. before/after temperature)."""
    cols = list(metrics)
    keys = [k for k in METRIC_NAMES if any(k in metrics[c] for c in cols)]
    lines = ["| metric | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for k in keys:
        vals = [f"{metrics[c][k]:.4f}" if k in metrics[c] else "" for c in cols]
        lines.append(f"| {METRIC_NAMES[k]} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def backends_table(backends: dict[str, dict]) -> str:
    """How each inference backend compares with eager fp32 (`teaming export`): the service serves only those
    that passed."""
    lines = [
        "| backend | top-1 same as fp32 | accuracy (change) | ECE (change) "
        "| policy decisions same | images/s | on | passed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in backends.items():
        same = f"{r['policy_decision_agreement']:.2%}" if "policy_decision_agreement" in r else "-"
        lines.append(
            f"| {name} | {r['top1_agreement']:.2%} | {r['accuracy']:.2%} ({100 * r['accuracy_change']:+.2f}) "
            f"| {r['ece']:.2%} ({100 * r['ece_change']:+.2f}) | {same} | {r['images_per_second']:.0f} "
            f"| {r.get('machine', '?')} | {'yes' if r['passed'] else 'no: ' + '; '.join(r.get('failed', []))} |"
        )
    first = next(iter(backends.values()))
    lines += ["", f"Checked on {first.get('checked_on', 'held-out items')}."]
    return "\n".join(lines)


def _what(meta: ModelMeta) -> str:
    """The card's first sentence: the model, its classes, its input and its calibration."""
    c = meta.contract
    which = (
        meta.arch if meta.kind == "teaming" else f"{meta.kind.upper() if meta.kind == 'onnx' else 'TorchScript'} graph"
    )
    return (
        f"{which} image classifier over {len(meta.classes)} classes ({', '.join(meta.classes)}); input "
        f"{c.describe()}; calibrated by temperature scaling (T = {meta.temperature:.4f})"
        f"{', mirror test-time augmentation' if meta.tta else ''}."
    )


def _training(meta: ModelMeta) -> list[str]:
    train = meta.training
    parts = ["## Training", ""]
    for stage in train.get("stages", []):
        parts.append(f"- **{stage['name']}**: {stage['description']}; {stage['seconds']:.0f} s on {stage['device']}.")
    if train.get("command"):
        earlier, start = [], train.get("init") or {}
        while start.get("command"):
            earlier.insert(0, f"`{start['command']}` builds the starting model {start['name']}; then ")
            start = start.get("init") or {}
        parts += ["", f"Reproduce: {''.join(earlier)}`{train['command']}`"]
    if train.get("hardware_note"):
        parts += ["", train["hardware_note"]]
    return parts


def _imported(meta: ModelMeta) -> list[str]:
    """How an imported graph was taken in: its file, its outputs, and each step's figures."""
    g, steps = meta.graph, meta.training.get("import", {})
    parts = [
        "## Import",
        "",
        f"- **Graph**: `{g.file}`, imported from `{g.source}` (SHA-256 {g.sha256[:16]}...).",
        f"- **Outputs**: `{g.logits or 'the first output'}` holds the class "
        + (
            "probabilities; they are turned back into logits (their log) before calibration."
            if g.outputs == "probabilities"
            else "logits."
        )
        + (f" `{g.features}` holds penultimate features." if g.features else ""),
    ]
    parts += [f"- **{name}**: {text}" for name, text in steps.get("steps", {}).items()]
    if meta.training.get("command"):
        parts += ["", f"Reproduce: `{meta.training['command']}`"]
    return parts


def _data(meta: ModelMeta) -> list[str]:
    data = meta.data
    parts = ["## Data and splits", "", f"- Images: {data.get('images', 'unknown')}"]
    parts.append(f"- Human labels: {data.get('labels', 'unknown')}")
    splits = data.get("splits")
    if splits:
        for name, ids in splits.items():
            parts.append(f"- {name.capitalize()}: {len(ids)} items (their ids are in model.json)")
        parts.append("- Each split is used for its step alone; `fit-policy` and `report` refuse the first two.")
        return parts
    parts += [
        f"- Training items: {data.get('train_items', 'unknown')}",
        f"- Temperature fitted on: {data.get('calibration_items', 'unknown')}",
    ]
    held = data.get("held_out_items")
    if held:
        parts.append(f"- **Held out**: {held}. Never seen in training or calibration; keep them for policy fitting")
        parts[-1] += " and evaluation."
    return parts


def _limits(meta: ModelMeta, guard: bool) -> list[str]:
    made = "was trained on small natural images" if meta.kind == "teaming" else "was calibrated on the images above"
    parts = [
        "## Intended use and limits",
        "",
        "Answers automatically only where its calibrated confidence clears a fitted deferral policy; the rest goes",
        f"to people. It {made}; confidences on other kinds of images are not calibrated.",
    ]
    if guard and meta.kind == "teaming":
        parts += [
            "",
            "A familiarity guard (`familiarity.safetensors`, fitted on the training features) scores how",
            "unlike its training images an image is; policies defer images past their limit as `unfamiliar`.",
            "EXPERIMENTS.md reports how many unfamiliar and shifted images it catches.",
        ]
    elif guard:
        reads = {
            "features": "its penultimate features",
            "energy": "the energy of its logits (no feature output was named)",
            "max-logit": "its largest logit (no feature output was named)",
        }[meta.guard or "features"]
        parts += [
            "",
            "A familiarity guard (`familiarity.safetensors`) scores how unlike its fitting images an image is, from",
            f"{reads}; policies defer images past their limit as `unfamiliar`.",
        ]
    return parts


def model_card(meta: ModelMeta, figures: list[str] | None = None, guard: bool = False) -> str:
    parts = [f"# Model card: {meta.name}", "", _what(meta), ""]
    parts += _imported(meta) if meta.kind != "teaming" else _training(meta)
    parts += ["", *_data(meta)]
    if meta.metrics:
        where = meta.data.get("eval_items", "the held-out items")
        parts += ["", f"## Metrics on {where}", "", metrics_table(meta.metrics)]
    if meta.backends:
        parts += ["", "## Backends", "", backends_table(meta.backends)]
    for fig in figures or []:
        parts += ["", f"![{fig}]({fig})"]
    parts += ["", *_limits(meta, guard), "", f"teaming {meta.library_version}, created {meta.created}.", ""]
    return "\n".join(parts)
