"""Photos as people send them, through the real service with the shipped model: every EXIF orientation gets the
upright photo's answer, reviewers are shown the photo upright, and a 12-megapixel phone JPEG fits the defaults."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from teaming.datasets import load_default_test
from tests.support.photos import oriented, phone_jpeg

pytest.importorskip("bentoml", reason="the service extra is not installed")


def _upright_photo() -> Image.Image:
    """A CIFAR-10 test image (a frog the model is sure of) blown up to a 320 x 240 photo."""
    img = load_default_test().images[7001].permute(1, 2, 0).numpy()
    return Image.fromarray(img).resize((320, 240), Image.BICUBIC)


def test_every_orientation_gets_the_upright_answer_and_reviewers_see_it_upright(serve, reviewers):
    server = serve(audit_rate=1.0, TEAMING_AUDIT_REVIEWERS="1")  # every photo gets a review task: its image is kept
    photos = oriented(_upright_photo())
    decisions = server.client().classify([(f"tag-{tag}", data) for tag, data in photos.items()])
    upright = decisions[0]
    for tag, d in zip(photos, decisions):
        assert (d.decision, d.label, d.top_k[0].label) == (upright.decision, upright.label, upright.top_k[0].label), tag
        assert abs(d.confidence - upright.confidence) < 0.02, tag
    reviewer = server.reviewer("alice")
    seen = 0
    while (task := reviewer.claim().task) is not None:
        shown = Image.open(io.BytesIO(reviewer.image(task.task_id)))
        assert shown.size == (320, 240), task.item_id  # upright whatever the tag: a browser needs nothing more
        assert shown.getexif().get(0x0112, 1) == 1, task.item_id
        reviewer.label(task.task_id, task.lease_id, "frog")
        seen += 1
    assert seen == 8


def test_a_phone_photo_fits_the_default_limits_and_is_answered(serve):
    server = serve(audit_rate=0.0, TEAMING_MAX_IMAGE_BYTES="", TEAMING_MAX_PIXELS="")  # "": the defaults
    data = phone_jpeg()
    assert 3e6 <= len(data) <= 6e6
    decision = server.client().classify([("phone", data)])[0]
    assert decision.decision in ("auto", "deferred") and len(decision.top_k) == 3


def test_callers_learn_what_is_served_and_may_send_data_urls(serve, reviewers):
    server = serve(audit_rate=0.0, TEAMING_CLASSIFY_TOKEN="caller-token")
    from teaming.client import ApiError, TeamingClient

    with pytest.raises(ApiError) as err:
        server.client().model()  # classify is closed: so is what it serves
    assert err.value.status == 401
    about = TeamingClient(server.url, "caller-token").model()
    assert about == server.reviewer("alice").model() == server.admin().model()  # any token
    assert about.kind == "teaming" and about.input.resize == "stretch" and about.input.size == 32
    assert about.guard == "features" and about.guard_active and len(about.classes) == 10
    photo = io.BytesIO()
    _upright_photo().save(photo, "JPEG")
    data = base64.b64encode(photo.getvalue()).decode()
    body = {"images": [{"id": "bare", "data": data}, {"id": "url", "data": f"data:image/jpeg;base64,{data}"}]}
    answered = server.client("caller-token").http.post("/classify", json=body).json()
    assert answered[0]["top_k"] == answered[1]["top_k"]  # a browser's FileReader result reads as the bare base64
