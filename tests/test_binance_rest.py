"""The REST client's weight bucket: requests wait for weight, but never past a deadline, and a
background request gives up once the pipeline stops (a clean stop must not queue behind it)."""

from __future__ import annotations

import threading
import time

import pytest

from quant_resources.binance.rest import BinanceRestError, _WeightBucket


def test_waits_for_weight_then_refuses_past_a_deadline() -> None:
    bucket = _WeightBucket(per_minute=600)  # 10 weight a second
    stopping = threading.Event()
    bucket.take(600, None, stopping)  # the whole minute's weight at once
    assert bucket.tokens < 1
    bucket.take(1, time.monotonic() + 5, stopping)  # waits for 0.1 s of refill, within 5 s
    with pytest.raises(BinanceRestError, match="deadline"):
        bucket.take(100, time.monotonic() + 0.5, stopping)  # needs ~10 s


def test_a_request_without_deadline_is_abandoned_when_stopping() -> None:
    bucket = _WeightBucket(per_minute=60)
    stopping = threading.Event()
    bucket.take(60, None, stopping)
    errors: list[Exception] = []

    def background() -> None:
        try:
            bucket.take(30, None, stopping)  # would wait ~30 s
        except BinanceRestError as exc:
            errors.append(exc)

    worker = threading.Thread(target=background)
    worker.start()
    time.sleep(0.2)
    stopping.set()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert errors and "stopping" in str(errors[0])
