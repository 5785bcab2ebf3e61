"""A typed HTTP client of the teaming service, for callers, reviewers' tools, simulations, benches and tests."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TypeVar

import httpx
from pydantic import BaseModel

from teaming.api import (
    AlarmsOut,
    Claimed,
    Decision,
    Labelled,
    ModelInfo,
    OutcomeOut,
    OutcomesPage,
    PolicyInfo,
    QueueStats,
    ReviewerOut,
    Skipped,
)

M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    """The service refused a request: `status` is the HTTP code, the message its one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class TeamingClient:
    """One caller of the service; `token` is sent as a bearer token (reviewer, admin or classify token)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def __enter__(self) -> "TeamingClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, model: type[M] | None = None, **kwargs) -> M | httpx.Response:
        r = self.http.request(method, path, **kwargs)
        if r.status_code >= 400:
            try:
                body = r.json()
                message = body.get("detail") or body.get("error") or r.text
            except ValueError:
                message = r.text
            raise ApiError(r.status_code, str(message))
        return r if model is None else model.model_validate(r.json())

    def classify(self, images: Sequence[tuple[str | None, bytes]]) -> list[Decision]:
        """Classify encoded images given as (item id or None, file bytes): one decision each, in order."""
        body = {"images": [{"id": i, "data": base64.b64encode(b).decode()} for i, b in images]}
        return [Decision.model_validate(d) for d in self._call("POST", "/classify", json=body).json()]

    def model(self) -> ModelInfo:
        """What the service serves: the model, its classes and input contract, the policy and the guard."""
        return self._call("GET", "/v1/model", ModelInfo)

    def claim(self) -> Claimed:
        return self._call("POST", "/v1/queue/claim", Claimed)

    def image(self, task_id: int) -> bytes:
        return self._call("GET", f"/v1/queue/tasks/{task_id}/image").content

    def label(self, task_id: int, lease_id: str, label: int | str | None, verdict: str = "class") -> Labelled:
        """Answer a claimed task: a class name or id, or verdict "none" (none of these) / "unsure" (can't tell)."""
        body = {"lease_id": lease_id, "label": label, "verdict": verdict}
        return self._call("POST", f"/v1/queue/tasks/{task_id}/label", Labelled, json=body)

    def correct(self, answer_id: int, lease_id: str, label: int | str | None, verdict: str = "class") -> Labelled:
        """Correct one's own answer within the service's correction window (the lease it was given under)."""
        body = {"lease_id": lease_id, "label": label, "verdict": verdict}
        return self._call("PUT", f"/v1/answers/{answer_id}", Labelled, json=body)

    def skip(self, task_id: int, lease_id: str) -> Skipped:
        return self._call("POST", f"/v1/queue/tasks/{task_id}/skip", Skipped, json={"lease_id": lease_id})

    def stats(self) -> QueueStats:
        return self._call("GET", "/v1/queue/stats", QueueStats)

    def outcome(self, decision_id: int) -> OutcomeOut:
        return self._call("GET", f"/v1/outcomes/{decision_id}", OutcomeOut)

    def outcomes(self, item_id: str | None = None, after: int = 0, limit: int = 100) -> OutcomesPage:
        """One page of outcomes, oldest decision first (all decisions of `item_id` when given)."""
        params = {"after": after, "limit": limit} | ({"item_id": item_id} if item_id is not None else {})
        return self._call("GET", "/v1/outcomes", OutcomesPage, params=params)

    def all_outcomes(self, limit: int = 500) -> list[OutcomeOut]:
        """Every outcome, page by page."""
        out, after = [], 0
        while after is not None:
            page = self.outcomes(after=after, limit=limit)
            out += page.items
            after = page.next_after
        return out

    def reviewers(self) -> list[ReviewerOut]:
        return [ReviewerOut.model_validate(r) for r in self._call("GET", "/v1/reviewers").json()]

    def reload_policy(self) -> PolicyInfo:
        return self._call("POST", "/v1/admin/policy/reload", PolicyInfo)

    def alarms(self) -> AlarmsOut:
        return self._call("GET", "/v1/alarms", AlarmsOut)

    def clear_alarms(self) -> AlarmsOut:
        return self._call("POST", "/v1/alarms/clear", AlarmsOut)

    def ready(self) -> bool:
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def metrics(self) -> str:
        return self._call("GET", "/metrics").text
