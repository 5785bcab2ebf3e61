"""Model cards: what a model is, what it was trained and calibrated on, and how it scored, in Markdown."""

from __future__ import annotations

from teaming.artifact import ModelMeta

METRIC_NAMES = {
    "accuracy": "Accuracy (CIFAR-10 labels)",
    "human_majority_accuracy": "Accuracy (human majority)",
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


def model_card(meta: ModelMeta, figures: list[str] | None = None) -> str:
    data, train = meta.data, meta.training
    held = data.get("held_out_items")
    parts = [
        f"# Model card: {meta.name}",
        "",
        f"{meta.arch} image classifier over {len(meta.classes)} classes ({', '.join(meta.classes)}), "
        f"input {meta.input_size}x{meta.input_size} RGB, calibrated by temperature scaling "
        f"(T = {meta.temperature:.4f}){', mirror test-time augmentation' if meta.tta else ''}.",
        "",
        "## Training",
        "",
    ]
    for stage in train.get("stages", []):
        parts.append(f"- **{stage['name']}**: {stage['description']}; {stage['seconds']:.0f} s on {stage['device']}.")
    if train.get("command"):
        parts += ["", f"Reproduce: `{train['command']}`"]
    if train.get("hardware_note"):
        parts += ["", train["hardware_note"]]
    parts += [
        "",
        "## Data and splits",
        "",
        f"- Images: {data.get('images', 'unknown')}",
        f"- Human labels: {data.get('labels', 'unknown')}",
        f"- Training items: {data.get('train_items', 'unknown')}",
        f"- Temperature fitted on: {data.get('calibration_items', 'unknown')}",
    ]
    if held:
        parts.append(
            f"- **Held out**: {held}. Never seen in training or calibration; "
            "keep them for policy fitting and evaluation."
        )
    if meta.metrics:
        parts += ["", f"## Metrics on {data.get('eval_items', 'the held-out items')}", "", metrics_table(meta.metrics)]
    for fig in figures or []:
        parts += ["", f"![{fig}]({fig})"]
    parts += [
        "",
        "## Intended use and limits",
        "",
        "Answers automatically only where its calibrated confidence clears a fitted deferral policy; the rest goes",
        "to people. It was trained on small natural images; confidences on other kinds of images are not calibrated.",
        "",
        f"teaming {meta.library_version}, created {meta.created}.",
        "",
    ]
    return "\n".join(parts)
