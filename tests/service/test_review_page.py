"""The reviewer page in headless Chromium (Debian's, driven by Playwright) against the real running server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("bentoml", reason="the service extra is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from teaming.datasets import default_test_jpegs  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "cifar10h-default"


def _signed_in(p, url: str, token: str):
    """(browser, page): headless Chromium on the review page, signed in with `token`, its first item shown. The
    page's CSP is bypassed: the tests wait on its state with evaluated JS, which the CSP forbids."""
    browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
    page = browser.new_page(bypass_csp=True)
    page.goto(f"{url}/v1/review")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_selector("#image[data-task-id]")
    return browser, page


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_reviewer_labels_by_click_and_keyboard(serve, reviewers, tmp_path):
    server = serve(audit_rate=0.0)
    decisions = []
    for start in range(7000, 7064, 16):
        idx = list(range(start, start + 16))
        decisions += server.client().classify([(f"cifar10_test/{i}", b) for i, b in zip(idx, default_test_jpegs(idx))])
    deferred = [d for d in decisions if d.decision == "deferred"]
    assert len(deferred) >= 3
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        strict = browser.new_page()  # under the page's own Content-Security-Policy its script still works
        strict.goto(f"{server.url}/v1/review")
        strict.fill("#token", reviewers["carol"])
        strict.click("button[type=submit]")
        strict.wait_for_selector("#classes button[data-label=cat]")
        strict.wait_for_selector("#image[data-task-id]")
        strict.close()
        carol = server.reviewer("carol")
        held = carol.claim().task  # her lease again: give the item back for the others
        carol.skip(held.task_id, held.lease_id)
        page = browser.new_page(bypass_csp=True)  # the rest steers the page with evaluated JS, which the CSP forbids
        failed = []  # every request of the page that fails (a missing script, stylesheet or image)
        page.on(
            "response", lambda r: failed.append((r.status, r.url.removeprefix(server.url))) if r.status >= 400 else None
        )
        page.goto(f"{server.url}/v1/review")
        page.fill("#token", "wrong-token")
        page.click("button[type=submit]")
        page.wait_for_selector("#status.error")
        assert "401" in page.text_content("#status")  # a token nobody holds

        page.fill("#token", reviewers["alice"])
        page.click("button[type=submit]")
        page.wait_for_selector("#classes button[data-label=cat]")
        page.wait_for_function("document.getElementById('image').naturalWidth > 0")  # the image really loaded
        assert page.evaluate("sessionStorage.getItem('teaming-token')") == reviewers["alice"]
        assert page.evaluate("localStorage.length") == 0  # the token goes with the tab
        icon = "fetch(document.querySelector('link[rel=icon]').href).then(r => r.status)"
        assert page.evaluate(icon) == 200  # headless Chromium asks for no icon itself; a tab would
        assert "waiting" in page.text_content("#progress")
        first = page.get_attribute("#image", "data-task-id")
        page.click("#classes button[data-label=cat]")  # label by click
        page.wait_for_function(f"document.getElementById('image').dataset.taskId !== '{first}'")
        assert page.text_content("#last") == f"Saved cat for task {first}"  # never the caller's item id
        assert page.text_content("#status") == f"Task {page.get_attribute('#image', 'data-task-id')}"
        second = page.get_attribute("#image", "data-task-id")
        page.keyboard.press("6")  # label by keyboard: the sixth class, dog
        page.wait_for_function(f"document.getElementById('image').dataset.taskId !== '{second}'")
        assert "Saved dog" in page.text_content("#last")
        page.wait_for_function("document.getElementById('progress').textContent.includes('You answered 2')")
        third = page.get_attribute("#image", "data-task-id")
        page.click("#none")  # an item that is none of the classes
        page.wait_for_function(f"document.getElementById('image').dataset.taskId !== '{third}'")
        assert "Saved none of these" in page.text_content("#last")
        fourth = page.get_attribute("#image", "data-task-id")
        page.keyboard.press("s")  # skip: said on the page, and the item goes to someone else first
        page.wait_for_function("document.getElementById('last').textContent.startsWith('Skipped')")
        assert page.text_content("#last") == f"Skipped task {fourth}: it goes to someone else first"
        box = page.evaluate("getComputedStyle(document.getElementById('image')).objectFit")
        assert box == "contain"  # a non-square photo keeps its aspect
        page.screenshot(path=str(tmp_path / "review.png"))
        bob = server.reviewer("bob")  # someone else takes whatever is left, but alice's current item
        while (t := bob.claim().task) is not None:
            bob.label(t.task_id, t.lease_id, "cat")
        page.keyboard.press("1")  # alice answers the item she holds
        page.wait_for_function("document.getElementById('status').textContent.includes('Nothing is waiting for you')")
        assert page.is_hidden("#item")  # no broken image beside an empty queue
        assert "0 waiting for you" in page.text_content("#progress")
        assert [status for status, _ in failed] == [401], failed  # only the wrong token's, nothing else missing
        browser.close()
    by_task = {d.task_id: d.decision_id for d in deferred}
    out1 = server.admin().outcome(by_task[int(first)])
    out2 = server.admin().outcome(by_task[int(second)])
    assert out1.final_label == "cat" and out2.final_label == "dog"
    assert out1.reviews[0].reviewer == "alice"
    out3 = server.admin().outcome(by_task[int(third)])
    said = [(r.reviewer, r.verdict, r.label) for r in out3.reviews]
    assert said == [("alice", "none", None), ("bob", "class", "cat")]  # after a "none", someone else looked
    assert out3.final_label == "cat"


def _digit_named_model(tmp_path):
    """The default model under the class names 0..9, with its policy bound to it: a model whose class names are
    keys a reviewer presses."""
    from teaming.model.meta import load_meta
    from teaming.policy import load_policy, save_policy

    model = tmp_path / "digit-named"
    shutil.copytree(DEFAULT_MODEL, model)
    meta = load_meta(model)
    meta.name, meta.classes = "digit-named", [str(d) for d in range(10)]
    (model / "model.json").write_text(meta.to_json())
    policy = load_policy(model / "policy.json")
    policy.classes_ = meta.classes
    policy.model_ = {**policy.model_, "name": meta.name, "created": meta.created}
    save_policy(policy, model / "policy.json")
    return model


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_a_key_records_the_class_it_reads_as(serve, reviewers, tmp_path):
    """With classes named 0..9, pressing 7 records class "7" (it once recorded the seventh class, "6")."""
    server = serve(audit_rate=0.0, TEAMING_MODEL_DIR=str(_digit_named_model(tmp_path)))
    decisions = []
    for start in range(7000, 7192, 16):
        idx = list(range(start, start + 16))
        decisions += server.client().classify([(f"item-{i}", b) for i, b in zip(idx, default_test_jpegs(idx))])
    deferred = {d.task_id: d.decision_id for d in decisions if d.decision == "deferred"}
    assert len(deferred) >= 10
    pressed = {}
    with sync_api.sync_playwright() as p:
        browser, page = _signed_in(p, server.url, reviewers["alice"])
        labels = page.eval_on_selector_all("#classes button", "bs => bs.map(b => b.textContent)")
        assert labels == [str(d) for d in range(10)]  # no second digit beside a class's name
        for key in "7031592846":
            task = page.get_attribute("#image", "data-task-id")
            page.keyboard.press(key)
            page.wait_for_function(f"document.getElementById('last').textContent.endsWith('task {task}')")
            assert page.text_content("#last") == f"Saved {key} for task {task}"
            moved = f"document.getElementById('image').dataset.taskId !== '{task}'"
            page.wait_for_function(f"{moved} || document.getElementById('item').hidden")  # the next task, or none
            pressed[int(task)] = key
        browser.close()
    for task, key in pressed.items():
        assert server.admin().outcome(deferred[task]).final_label == key


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_a_misclick_is_undone_on_the_page(serve, reviewers):
    server = serve(audit_rate=0.0)
    idx = list(range(7400, 7416))
    decisions = server.client().classify([(f"cifar10_test/{i}", b) for i, b in zip(idx, default_test_jpegs(idx))])
    by_task = {d.task_id: d.decision_id for d in decisions if d.decision == "deferred"}
    assert len(by_task) >= 2
    with sync_api.sync_playwright() as p:
        browser, page = _signed_in(p, server.url, reviewers["alice"])
        assert page.is_hidden("#undo")  # nothing to undo yet
        first = page.get_attribute("#image", "data-task-id")
        page.click("#classes button[data-label=cat]")  # the misclick
        page.wait_for_function(f"document.getElementById('image').dataset.taskId !== '{first}'")
        second = page.get_attribute("#image", "data-task-id")
        assert page.is_visible("#undo")
        page.keyboard.press("z")  # undo: the first item again, to choose again
        page.wait_for_function(f"document.getElementById('image').dataset.taskId === '{first}'")
        assert f"Correcting your answer to task {first}" in page.text_content("#status")
        page.click("#classes button[data-label=dog]")
        page.wait_for_function("document.getElementById('last').textContent.startsWith('Corrected')")
        assert page.text_content("#last") == f"Corrected task {first} to dog"
        assert page.get_attribute("#image", "data-task-id") == second  # back to the item in hand, still held
        assert page.is_hidden("#undo")
        page.keyboard.press("1")  # the item in hand is answered as usual
        page.wait_for_function(f"document.getElementById('last').textContent === 'Saved airplane for task {second}'")
        page.click("#undo")  # the button does what z does
        page.wait_for_function(f"document.getElementById('image').dataset.taskId === '{second}'")
        page.keyboard.press("s")  # s keeps the answer
        page.wait_for_function("document.getElementById('last').textContent === 'Kept your answer'")
        browser.close()
    admin = server.admin()
    assert admin.outcome(by_task[int(first)]).final_label == "dog"  # the corrected answer is the caller's
    assert admin.outcome(by_task[int(second)]).final_label == "airplane"


def _views_over_http(server, token: str) -> dict[int, list[str] | None]:
    """Task id -> the prediction set the claim's JSON carries (None when absent), over every task a reviewer is
    given once (each skipped after)."""
    import httpx

    shown, reviewer = {}, server.client(token)
    while True:
        task = httpx.post(f"{server.url}/v1/queue/claim", headers={"Authorization": f"Bearer {token}"}).json()["task"]
        if task is None or task["task_id"] in shown:
            return shown
        shown[task["task_id"]] = task.get("prediction_set")
        assert ("prediction_set" in task) == (task["view"] != "blind")  # the field is there only where it is shown
        reviewer.skip(task["task_id"], task["lease_id"])


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
@pytest.mark.parametrize("form", ["lenient", "strict"])
def test_a_deferred_items_reviewer_sees_its_set_and_an_auditor_never_does(serve, reviewers, form):
    server = serve(audit_rate=0.5, TEAMING_PREDICTION_SETS=form, TEAMING_SET_SHARE="1")
    idx = list(range(7100, 7132))
    decisions = []
    for start in range(0, len(idx), 16):
        chunk = idx[start : start + 16]
        decisions += server.client().classify(
            [(f"cifar10_test/{i}", b) for i, b in zip(chunk, default_test_jpegs(chunk))]
        )
    defer_tasks = {d.task_id for d in decisions if d.decision == "deferred"}
    unsure = {d.task_id for d in decisions if d.decision == "deferred" and d.reason == "unsure"}
    shown = _views_over_http(server, reviewers["bob"])
    assert len(unsure) >= 2 and len(shown) > len(defer_tasks)  # audits among them
    assert {t for t, s in shown.items() if s is not None} == unsure  # no audit task, nor an unfamiliar image
    with sync_api.sync_playwright() as p:
        browser, page = _signed_in(p, server.url, reviewers["alice"])
        task = int(page.get_attribute("#image", "data-task-id"))
        assert task in defer_tasks  # deferred items come first
        if task not in unsure:  # an unfamiliar image first: blind, and skipped for the next
            assert page.is_hidden("#sethint")
            page.keyboard.press("s")
            page.wait_for_function(f"document.getElementById('image').dataset.taskId !== '{task}'")
            task = int(page.get_attribute("#image", "data-task-id"))
        assert task in unsure and page.is_visible("#sethint")
        in_set = shown[task]
        labels = page.eval_on_selector_all("#classes button", "bs => bs.map(b => [b.dataset.label, b.dataset.key])")
        if form == "lenient":
            assert page.eval_on_selector_all("#classes button.in-set", "bs => bs.map(b => b.dataset.label)") == [
                name for name, _ in labels if name in in_set
            ]
            assert all(page.is_visible(f"#classes button[data-label={name}]") for name, _ in labels)
        else:
            visible = [name for name, _ in labels if page.is_visible(f"#classes button[data-label={name}]")]
            assert visible == [name for name, _ in labels if name in in_set] and page.is_visible("#none")
            outside = next(key for name, key in labels if name not in in_set)
            page.keyboard.press(outside)  # a class the strict form does not offer: its key answers nothing
        page.click(f"#classes button[data-label={in_set[0]}]")
        page.wait_for_function(f"document.getElementById('last').textContent === 'Saved {in_set[0]} for task {task}'")
        browser.close()
    by_task = {d.task_id: d.decision_id for d in decisions}
    outcome = server.admin().outcome(by_task[task])
    assert outcome.final_label == in_set[0] and outcome.reviews[0].reviewer == "alice"
    from sqlalchemy import create_engine, text

    engine = create_engine(server.db)
    with engine.connect() as conn:
        views = dict(conn.execute(text("SELECT task_id, view FROM reviews")).all())
    engine.dispose()
    assert views == {task: form}  # the answer records what its reviewer was shown
