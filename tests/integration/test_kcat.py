"""An outsider can talk to us: kcat (librdkafka, Debian) produces an event and reads its
prediction back, and reads a dead letter's headers."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from features.fraud_data import demo_events, load_entities
from streams import stack
from streams.settings import Settings
from tests.conftest import consume_until, kcat

pytestmark = pytest.mark.integration


def test_kcat_producer_and_consumer(
    settings_factory: Callable[..., Settings], worker_factory: Callable[..., stack.StackState]
) -> None:
    settings = settings_factory()
    worker_factory(settings)
    users, merchants = load_entities(settings.data_dir)
    event = demo_events(1, seed=99, users=users, merchants=merchants)[0]
    event["event_id"] = "kcat-event-1"
    lines = f"{event['user_id']}\t{json.dumps(event)}\nu1\tnot json at all\n"
    kcat(
        "-b",
        settings.bootstrap_servers,
        "-P",
        "-t",
        settings.topic("events"),
        "-K",
        "\t",
        stdin=lines,
    )

    out = consume_until(
        settings.bootstrap_servers, settings.topic("predictions"), "kcat-event-1", "%k\t%s\n"
    )
    line = next(line for line in out.splitlines() if "kcat-event-1" in line)
    key, value = line.split("\t", 1)
    record = json.loads(value)
    assert key == event["user_id"]
    assert record["event_id"] == "kcat-event-1" and record["entity"]["user_id"] == event["user_id"]

    dead = consume_until(
        settings.bootstrap_servers, settings.topic("deadletter"), "not json at all", "%h\t%s\n"
    )
    assert "error.stage=decode" in dead and "error.class=DecodeError" in dead
