"""MODEL_CARD.md, rendered from the same metadata model.json stores, so the two never disagree: what the model
is and takes, how it was made or imported, what it scored, how each backend compares, and its limits."""

from __future__ import annotations

from teaming.model.meta import ModelMeta
from teaming.templates import render

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


def _earlier_commands(training: dict) -> str:
    """The commands that built the chain of starting models, oldest first, each followed by "then"."""
    earlier, start = [], training.get("init") or {}
    while start.get("command"):
        earlier.insert(0, f"`{start['command']}` builds the starting model {start['name']}; then ")
        start = start.get("init") or {}
    return "".join(earlier)


GUARD_READS = {
    "features": "its penultimate features",
    "energy": "the energy of its logits (no feature output was named)",
    "max-logit": "its largest logit (no feature output was named)",
}


def model_card(meta: ModelMeta, figures: list[str] | None = None, guard: bool = False) -> str:
    """The card in Markdown (templates/model_card.md.j2)."""
    return render(
        "model_card.md.j2",
        meta=meta,
        what=_what(meta),
        earlier=_earlier_commands(meta.training),
        metrics=metrics_table(meta.metrics) if meta.metrics else "",
        backends=backends_table(meta.backends) if meta.backends else "",
        figures=figures or [],
        guard=guard,
        guard_reads=GUARD_READS[meta.guard or "features"],
    )
