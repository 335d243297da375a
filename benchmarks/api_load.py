"""Open-loop load from a process of its own: GET one URL at a fixed rate, print the latencies.

    python -m benchmarks.api_load URL RATE SECONDS   (bearer token in QUANT_BENCH_TOKEN)
    python -m benchmarks.api_load redis RATE SECONDS  (MGET of the keys in QUANT_BENCH_KEYS
                                                       on REDIS_URL: the peer)

Each request is due at start + i / RATE; its latency is counted from when it was due, not from
when it was sent, so a slow answer that delays the next ones is charged to all of them
(no coordinated omission). Prints one JSON list of latencies in microseconds.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    target, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    if target == "redis":
        import redis

        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        keys = os.environ["QUANT_BENCH_KEYS"].split(",")

        def call() -> None:
            assert all(v is not None for v in client.mget(keys))

    else:
        import httpx2

        client = httpx2.Client(
            headers={"Authorization": f"Bearer {os.environ['QUANT_BENCH_TOKEN']}"}, timeout=10
        )

        def call() -> None:
            response = client.get(target)
            assert response.status_code == 200, response.text

    for _ in range(50):  # warm up the connection and the server's code paths
        call()
    total = int(rate * seconds)
    latencies = []
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
        call()
        latencies.append((time.perf_counter() - due) * 1e6)
    print(json.dumps(latencies))


if __name__ == "__main__":
    main()
