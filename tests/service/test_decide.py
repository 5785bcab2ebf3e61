"""One request's data that the log refuses fails that request alone; the others in its batch are written."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

pytest.importorskip("bentoml", reason="the service extra is not installed")

from service.app import Teaming  # noqa: E402
from service.schemas import Refused  # noqa: E402
from teaming.ops.log import NewDecision  # noqa: E402


class Log:
    """A decision log that refuses any batch holding the item 'bad', and remembers what it wrote."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.written: list[str] = []

    def record(self, rows: list[NewDecision]):
        if self.down:
            raise OperationalError("INSERT", {}, Exception("connection refused"))
        if any(r.item_id == "bad" for r in rows):
            raise IntegrityError("INSERT", {}, Exception("value refused"))
        self.written += [r.item_id for r in rows]
        return [(len(self.written) - len(rows) + k, []) for k in range(len(rows))]


def service(log: Log):
    svc = Teaming.inner.__new__(Teaming.inner)
    svc.settings = SimpleNamespace(log_decisions=True)
    svc.store = SimpleNamespace(log=log)
    return svc


def row(item: str) -> NewDecision:
    return NewDecision(item, "auto", 0, 0.9, [0.9, 0.1], "m@1", "p")


def test_one_requests_bad_data_fails_only_that_request():
    log = Log()
    out = service(log)._log([[row("a"), row("b")], [row("bad")], [row("c")]])
    assert [len(x) if isinstance(x, list) else x.status for x in out] == [2, 400, 1]
    assert log.written == ["a", "b", "c"]


def test_a_log_that_is_down_fails_the_batch_with_503():
    with pytest.raises(Refused) as err:
        service(Log(down=True))._log([[row("a")], [row("b")]])
    assert err.value.status == 503 and err.value.retry_after
