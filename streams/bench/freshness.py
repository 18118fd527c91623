"""Freshness of streaming features, measured from outside: event sent -> online-store row.

In: a running stack (a feature worker consuming ``events``) and its :class:`Settings`.
Out: p50/p99/max seconds from the moment an event was acknowledged by the broker to the
moment its aggregates are readable in the online store through Feast, the path the
scoring worker reads. Each event is for a brand-new user, so "readable" is exact: the
user's row exists with ``txn_count_24h == 1``. A poller asks Feast for every pending
user in one call every ``poll_s`` (the measurement's resolution).

    python -m streams.bench.freshness --n 200 --rate 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import numpy as np

from features.online import FeastOnlineSource
from features.store import open_store
from streams.codec import encode
from streams.kafka import producer
from streams.online_store import online_store_config
from streams.settings import Settings

REF = "user_stream_stats:txn_count_24h"


async def measure(settings: Settings, n: int, rate: float, poll_s: float) -> dict[str, Any]:
    source = FeastOnlineSource(open_store(settings.feature_repo, online_store_config(settings)))
    client = producer(settings)
    await client.start()
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    tag = uuid.uuid4().hex[:6]

    async def poll() -> None:
        while len(seen) < n:
            pending = [u for u in sent if u not in seen]
            if pending:
                values = await source.fetch([REF], [{"user_id": u} for u in pending])
                now = time.time()
                for user, value in zip(pending, values[REF], strict=True):
                    if value == 1:
                        seen[user] = now
            await asyncio.sleep(poll_s)

    poller = asyncio.create_task(poll())
    try:
        for i in range(n):
            user = f"fresh-{tag}-{i}"
            event = {
                "event_id": f"{user}-e",
                "event_time": int(time.time() * 1000),
                "user_id": user,
                "merchant_id": "m0001",
                "amount": 12.5,
                "currency": "EUR",
                "channel": "web",
                "country": "DE",
            }
            await client.send_and_wait(settings.topic("events"), encode(event), key=user.encode())
            sent[user] = time.time()
            await asyncio.sleep(1 / rate)
        await asyncio.wait_for(poller, timeout=120)
    finally:
        poller.cancel()
        await client.stop()
        source.close()
    lags = np.array([seen[u] - sent[u] for u in sent])
    return {
        "events": n,
        "rate_per_s": rate,
        "poll_s": poll_s,
        "online_store": source.store.config.online_store.type,
        "p50_s": round(float(np.percentile(lags, 50)), 3),
        "p99_s": round(float(np.percentile(lags, 99)), 3),
        "max_s": round(float(lags.max()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--poll", type=float, default=0.02)
    args = parser.parse_args()
    result = asyncio.run(measure(Settings(), args.n, args.rate, args.poll))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
