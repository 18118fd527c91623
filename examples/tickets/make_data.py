"""Generate the support-ticket example's data (your own data takes its place).

Writes feature_repo/data/team_stats.parquet (daily snapshots per team, the feature
source), tickets.parquet (30 days of closed tickets with their resolution hours, the
training labels) and events.jsonl (new tickets, stamped now, for the worker).
Seeded: the same files every run, up to today.
"""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
rng = np.random.default_rng(11)
teams = [f"team-{i:02d}" for i in range(12)]
today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
days = [today - timedelta(days=d) for d in range(30, -1, -1)]

# Each team has a pace and a load that drift from day to day.
pace = dict(zip(teams, rng.uniform(2, 9, len(teams)), strict=True))
stats = pd.DataFrame(
    [
        {
            "event_timestamp": day,
            "team_id": team,
            "open_tickets": int(rng.poisson(5 + 3 * i % 17)),
            "avg_resolution_h_7d": float(pace[team] * rng.uniform(0.8, 1.2)),
        }
        for day in days
        for i, team in enumerate(teams)
    ]
)
(HERE / "feature_repo" / "data").mkdir(parents=True, exist_ok=True)
stats.to_parquet(HERE / "feature_repo" / "data" / "team_stats.parquet")

# Closed tickets: resolution hours grow with the team's pace and load and the ticket's size.
n = 3000
tickets = pd.DataFrame(
    {
        "event_timestamp": [
            today - timedelta(days=29) + timedelta(seconds=float(s))
            for s in np.sort(rng.uniform(0, 28 * 86400, n))
        ],
        "team_id": rng.choice(teams, n),
        "priority": rng.integers(1, 5, n),
        "words": rng.gamma(2.0, 60.0, n).round(),
    }
)
day_of = tickets["event_timestamp"].dt.floor("D")
known = stats.set_index(["event_timestamp", "team_id"])
row = known.loc[list(zip(day_of, tickets["team_id"], strict=True))]
tickets["hours"] = (
    1.5 * row["avg_resolution_h_7d"].to_numpy()
    + 0.4 * row["open_tickets"].to_numpy()
    - 1.2 * tickets["priority"]
    + 0.02 * tickets["words"]
    + rng.normal(0, 1.0, n)
).clip(0.5)
tickets.to_parquet(HERE / "tickets.parquet")

# New tickets for the worker: the model's event fields, the team, an id and a time.
stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
with (HERE / "events.jsonl").open("w") as out:
    for i in range(200):
        event = {
            "event_id": f"ticket-{i:05d}",
            "event_time": stamp,
            "team_id": str(rng.choice(teams)),
            "priority": int(rng.integers(1, 5)),
            "words": round(float(rng.gamma(2.0, 60.0))),
        }
        out.write(json.dumps(event) + "\n")
print(f"wrote {len(stats)} team snapshots, {n} closed tickets, 200 new tickets")
