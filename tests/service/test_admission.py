"""The admission drill (bench/admission.py), bounded: callers keep getting answers while strangers stall uploads
and a caller sends a request of twelve-megapixel photos. How fast they are answered is a benchmark's to say
(BENCHMARKS.md, admission), not a test's: on a busy machine any bound on time is a coin toss."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from tests.support.admission import Stallers, big_body, big_caller, steady


@pytest.mark.slow
def test_callers_are_answered_while_uploads_stall_and_photos_are_huge(serve):
    limits = dict(TEAMING_MAX_IMAGE_BYTES="16000000", TEAMING_MAX_PIXELS="14400000")
    srv = serve(audit_rate=0.0, **limits)
    body = big_body(16, 12.0)
    stallers = Stallers(srv.url, 300, 30, None)  # ten from each of thirty addresses
    stop, big = threading.Event(), Counter()
    caller = threading.Thread(target=big_caller, args=(srv.url, body, {}, stop, big))
    caller.start()
    time.sleep(1.0)
    probe = steady(srv.url, 8.0, {})
    stop.set()
    caller.join()
    stallers.close()
    assert set(probe.statuses) == {200} and big[200] >= 1  # nobody was turned away, the photos were answered
    assert len(probe.classify) >= 2 and len(probe.livez) >= 2  # callers kept being answered all along
