"""The model card is rendered from model.json alone, through its template."""

from pathlib import Path

from teaming.model.card import model_card
from teaming.model.meta import load_meta

DEFAULT = Path(__file__).resolve().parents[2] / "models" / "cifar10h-default"


def test_the_shipped_card_renders_from_its_model_json_as_shipped():
    meta = load_meta(DEFAULT)
    assert model_card(meta, ["reliability.png"], guard=True) == (DEFAULT / "MODEL_CARD.md").read_text()


def test_an_imported_card_says_how_it_was_taken_in():
    from teaming.model.meta import GraphSpec

    graph = GraphSpec(
        file="model.onnx", source="/x/net.onnx", sha256="ab" * 32, logits="probs", outputs="probabilities"
    )
    meta = load_meta(DEFAULT).model_copy(update={"kind": "onnx", "graph": graph, "guard": "energy"})
    meta.training = {"import": {"steps": {"calibration": "T = 1.2 on 40 photos"}}, "command": "teaming import net.onnx"}
    meta.data = {"images": "photos/", "labels": "votes.csv", "splits": {"calibration": ["a", "b"], "policy": ["c"]}}
    card = model_card(meta, [], guard=True)
    assert "- **Outputs**: `probs` holds the class probabilities; they are turned back into logits" in card
    assert "- **calibration**: T = 1.2 on 40 photos\n\nReproduce: `teaming import net.onnx`\n\n## Data" in card
    assert "- Calibration: 2 items (their ids are in model.json)\n- Policy: 1 items" in card
    assert "from\nthe energy of its logits (no feature output was named);" in card and card.endswith("+00:00.\n")
