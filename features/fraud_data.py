"""Seeded, reproducible data for the card-transaction fraud example.

In: a seed, sizes and an end time. Out: parquet files for Feast's file offline
store (``transactions.parquet``, ``user_stats.parquet``,
``merchant_stats.parquet``, ``user_stream_stats.parquet``,
``merchant_stream_stats.parquet``) and demo events that
follow the event data contract (see ARCHITECTURE.md).

Feature snapshots are daily. A snapshot stamped ``d`` only uses transactions
with ``event_timestamp < d`` (and, for fraud labels, only labels known before
``d``), so a point-in-time join never leaks the future into training rows.

The fraud the generator plants is detectable by the features: amounts far above
the user's usual, a handful of merchants with a much higher fraud rate, a
country other than the user's home country, the card-not-present channels and
bursts of several transactions within minutes (the last needs the streaming
features of ``user_stream_stats``). The history of the streaming views is the batch
computation of :mod:`features.aggregates`, the same rows the feature worker pushes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.aggregates import StreamingView, batch_rows

__all__ = [
    "OfflineData",
    "generate_offline_data",
    "demo_events",
    "load_entities",
    "offline_data_from_dir",
    "TRANSACTIONS_FILE",
    "USER_STATS_FILE",
    "MERCHANT_STATS_FILE",
    "USER_STREAM_STATS_FILE",
    "MERCHANT_STREAM_STATS_FILE",
    "USER_STREAM_VIEW",
    "MERCHANT_STREAM_VIEW",
]

TRANSACTIONS_FILE = "transactions.parquet"
USER_STATS_FILE = "user_stats.parquet"
MERCHANT_STATS_FILE = "merchant_stats.parquet"
USER_STREAM_STATS_FILE = "user_stream_stats.parquet"
MERCHANT_STREAM_STATS_FILE = "merchant_stream_stats.parquet"

# The example's streaming views as feature_repo/fraud_features.py declares them (a unit
# test checks the two agree); the generator writes their history with these.
USER_STREAM_VIEW = StreamingView.of(
    "user_stream_stats",
    "user_id",
    "user_stream_push",
    ["txn_count_10m", "txn_count_1h", "amount_sum_1h", "txn_count_24h", "amount_sum_24h"],
)
MERCHANT_STREAM_VIEW = StreamingView.of(
    "merchant_stream_stats",
    "merchant_id",
    "merchant_stream_push",
    ["txn_count_1h", "amount_sum_1h", "txn_count_24h"],
)

HOME_COUNTRIES = ("US", "GB", "DE", "FR", "CA", "NL", "ES")
HOME_WEIGHTS = (0.55, 0.12, 0.10, 0.08, 0.08, 0.04, 0.03)
# Countries that card fraud is disproportionately routed through in this toy world.
FRAUD_COUNTRIES = ("NG", "RU", "BR", "RO", "VN")
CURRENCY_BY_COUNTRY = {"US": "USD", "CA": "CAD", "GB": "GBP", "BR": "BRL", "RU": "RUB"}
CHANNELS = ("pos", "app", "web")
LEGIT_CHANNEL_WEIGHTS = (0.60, 0.28, 0.12)
FRAUD_CHANNEL_WEIGHTS = (0.10, 0.25, 0.65)
# Merchant category -> (risk tier, typical amount factor)
CATEGORIES = {
    "grocery": (0, 0.8),
    "fuel": (0, 1.0),
    "restaurant": (0, 0.9),
    "fashion": (1, 1.6),
    "electronics": (1, 3.0),
    "travel": (2, 4.0),
    "digital": (2, 0.6),
}
LABEL_DELAY = timedelta(days=2)  # fraud labels (chargebacks) arrive late
FRAUD_RATE_PRIOR = 0.015
FRAUD_RATE_PRIOR_WEIGHT = 20.0


@dataclass(frozen=True)
class OfflineData:
    """Where the generated offline data lives and which entities it holds."""

    transactions: Path
    user_stats: Path
    merchant_stats: Path
    user_stream_stats: Path
    merchant_stream_stats: Path
    users: list[str]
    merchants: list[str]
    start: datetime
    end: datetime


def _currency(country: np.ndarray) -> np.ndarray:
    return np.array([CURRENCY_BY_COUNTRY.get(c, "EUR") for c in country], dtype=object)


def _floor_day(ts: datetime) -> datetime:
    ts = ts.astimezone(UTC)
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def _uuid4s(rng: np.random.Generator, n: int) -> list[str]:
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    return [str(uuid.UUID(bytes=row.tobytes(), version=4)) for row in raw]


def _rolling_sum(daily: np.ndarray, window: int) -> np.ndarray:
    """out[:, d] = sum of daily[:, d-window .. d-1]; day d itself is excluded (no leakage)."""
    n, days = daily.shape
    cs = np.zeros((n, days + 1), dtype=np.float64)
    np.cumsum(daily, axis=1, out=cs[:, 1:])
    idx = np.arange(days + 1)
    lo = np.clip(idx - window, 0, None)
    # snapshot d (0..days) covers day indices [d-window, d)
    return cs[:, idx] - cs[:, lo]


def _rolling_max(daily: np.ndarray, window: int) -> np.ndarray:
    n, days = daily.shape
    padded = np.concatenate([np.zeros((n, window), dtype=daily.dtype), daily], axis=1)
    views = np.lib.stride_tricks.sliding_window_view(padded, window, axis=1)
    # views[:, k] covers padded[k : k+window] == daily days [k-window, k)
    return views.max(axis=2)[:, : days + 1]


def generate_offline_data(
    out_dir: Path,
    seed: int = 7,
    n_users: int = 2000,
    n_merchants: int = 300,
    days: int = 60,
    end: datetime | None = None,
) -> OfflineData:
    """Generate transactions plus point-in-time-correct daily feature snapshots.

    ``end`` defaults to today's midnight UTC; it is floored to a day boundary so
    that the last snapshot is stamped exactly ``end``.
    """
    if n_users < 1 or n_merchants < 1 or days < 2:
        raise ValueError(
            f"need n_users >= 1, n_merchants >= 1, days >= 2; got {n_users}, {n_merchants}, {days}"
        )
    end = _floor_day(end if end is not None else datetime.now(UTC))
    start = end - timedelta(days=days)
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)

    users = [f"u{i:05d}" for i in range(n_users)]
    merchants = [f"m{j:04d}" for j in range(n_merchants)]

    # --- users ---
    home = rng.choice(np.array(HOME_COUNTRIES), size=n_users, p=HOME_WEIGHTS)
    # account opened up to a year before the window, some during the first half
    user_open_days = rng.uniform(-365, days * 0.5, size=n_users)
    user_rate = rng.lognormal(np.log(0.6), 0.5, size=n_users)  # txns per day
    user_amount = rng.lognormal(np.log(35.0), 0.6, size=n_users)
    n_fav = 8
    favourites = rng.integers(0, n_merchants, size=(n_users, n_fav))

    # --- merchants ---
    cat_names = np.array(list(CATEGORIES))
    cat_p = np.array([0.25, 0.15, 0.2, 0.12, 0.1, 0.08, 0.1])
    m_cat = rng.choice(len(cat_names), size=n_merchants, p=cat_p)
    m_tier = np.array([CATEGORIES[c][0] for c in cat_names])[m_cat]
    m_factor = np.array([CATEGORIES[c][1] for c in cat_names])[m_cat]
    m_open_days = rng.uniform(-3 * 365, days * 0.3, size=n_merchants)
    # a few merchants attract much more fraud (compromised terminals, lax checks)
    risky_p = np.where(m_tier == 2, 0.20, np.where(m_tier == 1, 0.08, 0.02))
    m_risky = rng.random(n_merchants) < risky_p

    # --- legitimate transactions ---
    active_from = np.clip(user_open_days, 0, None)
    n_per_user = rng.poisson(user_rate * (days - active_from))
    t_user = np.repeat(np.arange(n_users), n_per_user)
    n = t_user.size
    t_day = active_from[t_user] + rng.random(n) * (days - active_from[t_user])
    use_fav = rng.random(n) < 0.85
    t_merchant = np.where(
        use_fav,
        favourites[t_user, rng.integers(0, n_fav, size=n)],
        rng.integers(0, n_merchants, size=n),
    )
    t_amount = user_amount[t_user] * m_factor[t_merchant] * rng.lognormal(0.0, 0.45, size=n)
    travelling = rng.random(n) < 0.04
    # mostly to the usual places, now and then somewhere fraud is common too
    travel_to = np.where(
        rng.random(n) < 0.12,
        rng.choice(np.array(FRAUD_COUNTRIES), size=n),
        rng.choice(np.array(HOME_COUNTRIES), size=n),
    )
    t_country = np.where(travelling, travel_to, home[t_user])
    t_channel = rng.choice(np.array(CHANNELS), size=n, p=LEGIT_CHANNEL_WEIGHTS)

    # --- fraud: chosen by a risk score, then made to look like fraud ---
    logit = -5.6 + 2.6 * m_risky[t_merchant] + 0.4 * m_tier[t_merchant]
    is_fraud = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    k = int(is_fraud.sum())
    t_amount[is_fraud] *= rng.lognormal(np.log(4.0), 0.5, size=k)
    foreign_to = np.where(
        rng.random(k) < 0.6,
        rng.choice(np.array(FRAUD_COUNTRIES), size=k),
        rng.choice(np.array(HOME_COUNTRIES), size=k),
    )
    t_country[is_fraud] = np.where(rng.random(k) < 0.6, foreign_to, t_country[is_fraud])
    t_channel[is_fraud] = rng.choice(np.array(CHANNELS), size=k, p=FRAUD_CHANNEL_WEIGHTS)

    # bursts: a third of fraud cases are followed by 2-4 more card tests within minutes
    seeds_idx = np.flatnonzero(is_fraud)
    burst_from = seeds_idx[rng.random(k) < 0.35]
    burst_len = rng.integers(2, 5, size=burst_from.size)
    b_src = np.repeat(burst_from, burst_len)
    m = b_src.size
    b_day = t_day[b_src] + np.cumsum(rng.uniform(0.5, 6.0, size=m)) % 20.0 / (24 * 60)
    b_day = np.minimum(b_day, days - 1e-6)
    b_amount = t_amount[b_src] * rng.lognormal(0.0, 0.3, size=m)
    b_merchant = np.where(rng.random(m) < 0.5, t_merchant[b_src], rng.integers(0, n_merchants, m))

    all_user = np.concatenate([t_user, t_user[b_src]])
    all_day = np.concatenate([t_day, b_day])
    all_merchant = np.concatenate([t_merchant, b_merchant])
    all_amount = np.round(np.concatenate([t_amount, b_amount]), 2)
    all_country = np.concatenate([t_country, t_country[b_src]])
    all_channel = np.concatenate([t_channel, t_channel[b_src]])
    all_fraud = np.concatenate([is_fraud, np.ones(m, dtype=bool)])

    order = np.argsort(all_day, kind="stable")
    all_user, all_day, all_merchant = all_user[order], all_day[order], all_merchant[order]
    all_amount, all_country = all_amount[order], all_country[order]
    all_channel, all_fraud = all_channel[order], all_fraud[order]
    total = all_user.size

    ts = pd.Timestamp(start) + pd.to_timedelta(np.round(all_day * 86400 * 1000), unit="ms")
    tx = pd.DataFrame(
        {
            "event_id": _uuid4s(rng, total),
            "event_timestamp": ts,
            "user_id": np.array(users, dtype=object)[all_user],
            "merchant_id": np.array(merchants, dtype=object)[all_merchant],
            "amount": all_amount.astype(np.float64),
            "currency": _currency(all_country),
            "channel": all_channel.astype(object),
            "country": all_country.astype(object),
            "is_fraud": all_fraud.astype(np.int64),
        }
    )

    # --- daily snapshots (index d = 0..days is the snapshot at start + d days) ---
    day_idx = np.floor(all_day).astype(np.int64)
    snapshot_times = pd.date_range(start, end, freq="D")

    def daily(entity: np.ndarray, n_entities: int, values: np.ndarray) -> np.ndarray:
        out = np.zeros((n_entities, days), dtype=np.float64)
        np.add.at(out, (entity, day_idx), values)
        return out

    ones = np.ones(total)
    u_cnt = daily(all_user, n_users, ones)
    u_sum = daily(all_user, n_users, all_amount)
    u_sq = daily(all_user, n_users, all_amount**2)
    u_max_daily = np.zeros((n_users, days))
    np.maximum.at(u_max_daily, (all_user, day_idx), all_amount)

    cnt7 = _rolling_sum(u_cnt, 7)
    cnt30 = _rolling_sum(u_cnt, 30)
    sum30 = _rolling_sum(u_sum, 30)
    sq30 = _rolling_sum(u_sq, 30)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg30 = np.where(cnt30 > 0, sum30 / cnt30, 0.0)
        var30 = np.where(cnt30 > 1, (sq30 - cnt30 * avg30**2) / (cnt30 - 1), 0.0)
    std30 = np.sqrt(np.clip(var30, 0, None))
    max30 = _rolling_max(u_max_daily, 30)

    # distinct merchants over 30 days: presence per (user, merchant) pair and day
    pair = all_user.astype(np.int64) * n_merchants + all_merchant
    pair_ids, pair_idx = np.unique(pair, return_inverse=True)
    presence = np.zeros((pair_ids.size, days), dtype=np.float64)
    presence[pair_idx, day_idx] = 1.0
    seen30 = _rolling_sum(presence, 30) > 0
    distinct30 = np.zeros((n_users, days + 1))
    np.add.at(distinct30, pair_ids // n_merchants, seen30.astype(np.float64))

    snap_day = np.arange(days + 1, dtype=np.float64)
    u_days_since = snap_day[None, :] - user_open_days[:, None]
    u_exists = u_days_since > 0
    uu, dd = np.nonzero(u_exists)
    user_stats = pd.DataFrame(
        {
            "user_id": np.array(users, dtype=object)[uu],
            "event_timestamp": snapshot_times[dd],
            "txn_count_7d": cnt7[uu, dd].astype(np.int64),
            "avg_amount_30d": avg30[uu, dd].astype(np.float32),
            "std_amount_30d": std30[uu, dd].astype(np.float32),
            "max_amount_30d": max30[uu, dd].astype(np.float32),
            "distinct_merchants_30d": distinct30[uu, dd].astype(np.int64),
            "home_country": home[uu].astype(object),
            "days_since_first_txn": u_days_since[uu, dd].astype(np.float32),
        }
    )
    user_stats["created"] = user_stats["event_timestamp"]

    m_cnt = daily(all_merchant, n_merchants, ones)
    m_sum = daily(all_merchant, n_merchants, all_amount)
    # a label is known LABEL_DELAY after its transaction: shift it into the future
    delay = LABEL_DELAY.days
    m_fraud_known = np.zeros((n_merchants, days))
    m_cnt_known = np.zeros((n_merchants, days))
    known_day = day_idx + delay
    ok = known_day < days
    np.add.at(m_fraud_known, (all_merchant[ok], known_day[ok]), all_fraud[ok].astype(float))
    np.add.at(m_cnt_known, (all_merchant[ok], known_day[ok]), 1.0)
    m_cnt7 = _rolling_sum(m_cnt, 7)
    m_cnt30 = _rolling_sum(m_cnt, 30)
    m_avg30 = np.where(m_cnt30 > 0, _rolling_sum(m_sum, 30) / np.maximum(m_cnt30, 1), 0.0)
    f90 = _rolling_sum(m_fraud_known, 90)
    n90 = _rolling_sum(m_cnt_known, 90)
    # smoothed towards the prior so a merchant with 1 fraud in 2 txns is not "100% fraud"
    rate90 = (f90 + FRAUD_RATE_PRIOR * FRAUD_RATE_PRIOR_WEIGHT) / (n90 + FRAUD_RATE_PRIOR_WEIGHT)
    m_days_since = snap_day[None, :] - m_open_days[:, None]
    mm, md = np.nonzero(m_days_since > 0)
    merchant_stats = pd.DataFrame(
        {
            "merchant_id": np.array(merchants, dtype=object)[mm],
            "event_timestamp": snapshot_times[md],
            "txn_count_7d": m_cnt7[mm, md].astype(np.int64),
            "avg_amount_30d": m_avg30[mm, md].astype(np.float32),
            "fraud_rate_90d": rate90[mm, md].astype(np.float32),
            "risk_tier": m_tier[mm].astype(np.int64),
            "merchant_age_days": m_days_since[mm, md].astype(np.float32),
        }
    )
    merchant_stats["created"] = merchant_stats["event_timestamp"]

    # Batch history of the push-fed stream views: after each transaction, the row the
    # feature worker would have pushed (features.aggregates semantics).
    user_stream = stream_history(USER_STREAM_VIEW, tx, until=end)
    merchant_stream = stream_history(MERCHANT_STREAM_VIEW, tx, until=end)

    paths = OfflineData(
        transactions=out_dir / TRANSACTIONS_FILE,
        user_stats=out_dir / USER_STATS_FILE,
        merchant_stats=out_dir / MERCHANT_STATS_FILE,
        user_stream_stats=out_dir / USER_STREAM_STATS_FILE,
        merchant_stream_stats=out_dir / MERCHANT_STREAM_STATS_FILE,
        users=users,
        merchants=merchants,
        start=start,
        end=end,
    )
    tx.to_parquet(paths.transactions, index=False)
    user_stats.to_parquet(paths.user_stats, index=False)
    merchant_stats.to_parquet(paths.merchant_stats, index=False)
    user_stream.to_parquet(paths.user_stream_stats, index=False)
    merchant_stream.to_parquet(paths.merchant_stream_stats, index=False)
    return paths


def stream_history(
    view: StreamingView, tx: pd.DataFrame, until: datetime | None = None
) -> pd.DataFrame:
    """The rows of a streaming view over a transaction history, typed as the view declares
    them (counts Int64, sums Float32), in the column order its parquet keeps.

    ``until``: leave out rows stamped later (windows that empty after the history ends):
    the history knows nothing of events after it, and such a row, newer than what the
    feature worker wrote, would win a point-in-time join or a later materialize."""
    rows = batch_rows(view, tx)
    if until is not None:
        rows = rows[rows["event_timestamp"] <= pd.Timestamp(until)].reset_index(drop=True)
    for agg in view.aggregates:
        rows[agg.feature] = rows[agg.feature].astype(
            np.int64 if agg.kind == "count" else np.float32
        )
    rows[view.entity_key] = rows[view.entity_key].astype(object)
    return rows[[view.entity_key, "event_timestamp", *view.features, "created"]]


def offline_data_from_dir(data_dir: Path) -> OfflineData:
    """Describe data that ``generate_offline_data`` wrote earlier into ``data_dir``."""
    tx_path = data_dir / TRANSACTIONS_FILE
    if not tx_path.exists():
        raise FileNotFoundError(f"no {TRANSACTIONS_FILE} in {data_dir}; generate the data first")
    users, merchants = load_entities(data_dir)
    ts = pd.read_parquet(tx_path, columns=["event_timestamp"])["event_timestamp"]
    start = _floor_day(ts.min().to_pydatetime())
    stats = pd.read_parquet(data_dir / USER_STATS_FILE, columns=["event_timestamp"])
    end = stats["event_timestamp"].max().to_pydatetime()  # the last snapshot is the data end
    return OfflineData(
        transactions=tx_path,
        user_stats=data_dir / USER_STATS_FILE,
        merchant_stats=data_dir / MERCHANT_STATS_FILE,
        user_stream_stats=data_dir / USER_STREAM_STATS_FILE,
        merchant_stream_stats=data_dir / MERCHANT_STREAM_STATS_FILE,
        users=users,
        merchants=merchants,
        start=start,
        end=end,
    )


def load_entities(data_dir: Path) -> tuple[list[str], list[str]]:
    """Read back the user and merchant ids present in the generated feature snapshots."""
    try:
        u = pd.read_parquet(data_dir / USER_STATS_FILE, columns=["user_id"])["user_id"]
        m = pd.read_parquet(data_dir / MERCHANT_STATS_FILE, columns=["merchant_id"])["merchant_id"]
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"feature snapshots missing in {data_dir}; generate the data first"
        ) from exc
    return sorted(u.unique().tolist()), sorted(m.unique().tolist())


def demo_events(
    n: int,
    seed: int,
    users: Sequence[str],
    merchants: Sequence[str],
    fraud_rate: float = 0.02,
    now: datetime | None = None,
    unknown_user_rate: float = 0.0,
) -> list[dict[str, Any]]:
    """Events following the data contract, stamped ``now``; some look like fraud.

    ``unknown_user_rate`` is the share of events whose user id is not in ``users``
    (the online store has no features for them).
    """
    if not users or not merchants:
        raise ValueError("demo_events needs at least one user and one merchant")
    if not 0.0 <= fraud_rate <= 1.0 or not 0.0 <= unknown_user_rate <= 1.0:
        raise ValueError(
            f"fraud_rate and unknown_user_rate must be in [0, 1]; "
            f"got {fraud_rate}, {unknown_user_rate}"
        )
    rng = np.random.default_rng(seed)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    stamp = now.isoformat().replace("+00:00", "Z")
    fraud = rng.random(n) < fraud_rate
    unknown = rng.random(n) < unknown_user_rate
    user_ix = rng.integers(0, len(users), size=n)
    merchant_ix = rng.integers(0, len(merchants), size=n)
    base = rng.lognormal(np.log(35.0), 0.7, size=n)
    amount = np.round(np.where(fraud, base * rng.lognormal(np.log(6.0), 0.5, n), base), 2)
    home = rng.choice(np.array(HOME_COUNTRIES), size=n, p=HOME_WEIGHTS)
    country = np.where(fraud, rng.choice(np.array(FRAUD_COUNTRIES), size=n), home)
    channel = np.where(
        fraud,
        rng.choice(np.array(CHANNELS), size=n, p=FRAUD_CHANNEL_WEIGHTS),
        rng.choice(np.array(CHANNELS), size=n, p=LEGIT_CHANNEL_WEIGHTS),
    )
    ids = _uuid4s(rng, n)
    unknown_ids = rng.integers(0, 10**6, size=n)
    events: list[dict[str, Any]] = []
    for i in range(n):
        country_i = str(country[i])
        events.append(
            {
                "event_id": ids[i],
                "event_time": stamp,
                "user_id": f"x{unknown_ids[i]:06d}" if unknown[i] else users[user_ix[i]],
                "merchant_id": merchants[merchant_ix[i]],
                "amount": float(amount[i]),
                "currency": CURRENCY_BY_COUNTRY.get(country_i, "EUR"),
                "channel": str(channel[i]),
                "country": country_i,
            }
        )
    return events


def replay_events(
    data_dir: Path,
    n: int,
    seed: int,
    now: datetime | None = None,
    recent_fraction: float = 0.2,
) -> tuple[list[dict[str, Any]], list[int]]:
    """Events resampled from the most recent transactions, stamped ``now``, and their truth.

    Unlike :func:`demo_events` (users and merchants drawn uniformly, amounts unrelated
    to the user's usual), this keeps who buys where, how much and how often, so the
    traffic looks like what the model's reference profile (its hold-out, the newest
    ``recent_fraction`` of time) was computed on: no drift unless one is provoked.
    The second list is the ground truth (``is_fraud``) of each event, for label demos.
    """
    if n < 0 or not 0.0 < recent_fraction <= 1.0:
        raise ValueError(f"need n >= 0 and 0 < recent_fraction <= 1; got {n}, {recent_fraction}")
    columns = ["event_timestamp", "user_id", "merchant_id", "amount", "country", "channel"]
    tx = pd.read_parquet(data_dir / TRANSACTIONS_FILE, columns=[*columns, "is_fraud"])
    recent = tx[tx["event_timestamp"] >= tx["event_timestamp"].quantile(1.0 - recent_fraction)]
    if recent.empty:
        raise ValueError(f"no transactions to replay in {data_dir / TRANSACTIONS_FILE}")
    rng = np.random.default_rng(seed)
    rows = recent.iloc[rng.integers(0, len(recent), size=n)]
    stamp = (now or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")
    events = [
        {
            "event_id": event_id,
            "event_time": stamp,
            "user_id": str(user),
            "merchant_id": str(merchant),
            "amount": float(amount),
            "currency": CURRENCY_BY_COUNTRY.get(str(country), "EUR"),
            "channel": str(channel),
            "country": str(country),
        }
        for event_id, user, merchant, amount, country, channel in zip(
            _uuid4s(rng, n),
            rows["user_id"],
            rows["merchant_id"],
            rows["amount"],
            rows["country"],
            rows["channel"],
            strict=True,
        )
    ]
    return events, [int(v) for v in rows["is_fraud"]]


def demo_stream(
    data_dir: Path,
    n: int,
    seed: int,
    unknown_user_rate: float = 0.0,
    drift: dict[str, float] | None = None,
    flip_labels: float = 0.0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(events, labels) of the demo (`streamscore produce`): recent transactions replayed,
    stamped now.

    ``unknown_user_rate`` is the share of events whose user has no online features;
    ``drift`` multiplies numeric event fields (``{"amount": 3}``) so an operator can
    provoke a drift signal; ``flip_labels`` is the share of ground-truth labels sent
    flipped, which provokes an online quality drop. Labels are ``labels`` records
    (``{"event_id", "label", "label_time"}``).
    """
    if not 0.0 <= unknown_user_rate <= 1.0 or not 0.0 <= flip_labels <= 1.0:
        raise ValueError("--unknown-user-rate and --flip-labels must be in [0, 1]")
    events, truth = replay_events(data_dir, n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    unknown = rng.random(n) < unknown_user_rate
    flipped = rng.random(n) < flip_labels
    label_time = events[0]["event_time"] if events else None
    labels: list[dict[str, Any]] = []
    for i, event in enumerate(events):
        if unknown[i]:
            event["user_id"] = f"x{rng.integers(0, 10**6):06d}"  # no online features
        for name, factor in (drift or {}).items():
            if isinstance(event.get(name), int | float):
                event[name] = round(event[name] * factor, 2)
        label = truth[i] ^ int(flipped[i])
        labels.append({"event_id": event["event_id"], "label": label, "label_time": label_time})
    return events, labels
