"""The bench's figures from observed timestamps and samples, without a broker."""

import pytest

from streams.bench.harness import BenchConfig, subject_spec, tagged, unavailable_reason
from streams.bench.report import (
    SubjectResult,
    cpu_between,
    latencies_ms,
    not_run,
    percentiles,
    ratios,
    render_table,
    sustained_rate,
    worst_seconds,
)
from streams.codec import decode, encode


def test_sustained_rate_ignores_ramp_and_tail() -> None:
    # 1,000 outputs per second for 10 s, plus a slow start and a straggler.
    steady = [1000.0 + i for i in range(10_000)]
    ramp = [0.0, 400.0, 800.0]
    straggler = [60_000.0]
    rate = sustained_rate(ramp + steady + straggler)
    assert rate == pytest.approx(1000.0, rel=0.01)


def test_sustained_rate_needs_enough_outputs() -> None:
    assert sustained_rate([1.0, 2.0, 3.0]) is None


def test_latencies_match_by_event_id_and_count_the_first_outcome() -> None:
    sent = {"a": 1000.0, "b": 1010.0}
    received = [("a", 1005.0), ("b", 1030.0), ("a", 1100.0), ("probe", 999.0)]
    assert latencies_ms(sent, received) == [5.0, 20.0]


def test_worst_seconds_show_when_a_one_off_stall_happened() -> None:
    # 200 events/s for 3 s; the events sent in second 1 met a 900 ms stall.
    sent = {f"e{i}": 1000.0 + i * 5 for i in range(600)}
    received = [(e, t + (900.0 if 2200 <= t < 2400 else 30.0)) for e, t in sent.items()]
    worst = worst_seconds(sent, received + [("e0", 9999.0)], k=2)  # a redelivery: ignored
    assert worst[0] == [1.0, 200.0, 30.0, 900.0], "second 1: a stall of 40 of its events"
    assert worst[1][1:] == [200.0, 30.0, 30.0]
    assert worst_seconds({}, []) == []


def test_percentiles_of_nothing_are_none_not_zero() -> None:
    assert percentiles([]) == {"p50_ms": None, "p99_ms": None, "p999_ms": None, "max_ms": None}
    figures = percentiles([float(i) for i in range(1, 1001)])
    assert figures["p50_ms"] == pytest.approx(500.5, abs=0.1)
    assert figures["p99_ms"] == pytest.approx(990.0, abs=1.0)
    assert figures["max_ms"] == 1000.0


def test_cpu_between_interpolates_and_refuses_uncovered_spans() -> None:
    samples = [(100.0, 1.0), (101.0, 2.0), (102.0, 4.0)]
    assert cpu_between(samples, 100.5, 101.5) == pytest.approx(1.5)
    assert cpu_between(samples, 90.0, 101.0) is None
    assert cpu_between(samples, 101.0, 101.0) is None


def _ok(name: str, eps: float, p99: float) -> SubjectResult:
    return SubjectResult(
        subject=name, events_per_s=eps, p50_ms=p99 / 2, p99_ms=p99, cpu_s_per_1k=1.0, rss_mb=100.0
    )


def test_ratios_only_for_pairs_that_both_ran() -> None:
    results = {
        "framework": _ok("framework", 4000.0, 40.0),
        "streamscore": _ok("streamscore", 2000.0, 20.0),
        "naive": not_run("naive", "failed", "boom"),
    }
    table = ratios(results)
    assert set(table) == {"streamscore/framework"}
    assert table["streamscore/framework"]["events_per_s"] == 0.5
    assert table["streamscore/framework"]["p99_ms"] == 0.5


def test_a_subject_that_did_not_run_has_no_numbers_and_says_why() -> None:
    failed = not_run("quix", "unavailable", "no Quix environment")
    assert failed.as_dict()["events_per_s"] is None
    assert "unavailable: no Quix environment" in render_table([failed])


def test_tagged_events_keep_everything_but_the_id() -> None:
    records = [(b"u1", encode({"event_id": "e1", "amount": 3.5}))]
    ((key, value),) = tagged(records, "run7")
    assert key == b"u1"
    assert decode(value) == {"event_id": "run7-e1", "amount": 3.5}


def test_quix_without_its_environment_is_unavailable(tmp_path) -> None:
    config = BenchConfig(quix_python=tmp_path / "missing" / "python")
    reason = unavailable_reason(subject_spec("quix", config), config)
    assert reason is not None and "make bench-env" in reason


def test_unknown_subject_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown bench subject"):
        subject_spec("flink", BenchConfig())


def test_workers_row_runs_n_processes_on_n_partitions() -> None:
    spec = subject_spec("streamscore_2w", BenchConfig(workers=2))
    assert (spec.processes, spec.partitions) == (2, 2)


def test_cli_bench_options() -> None:
    from streams.cli.bench import bench

    params = bench.make_context(
        "bench",
        [
            "--quick",
            "--subjects",
            "framework,streamscore",
            "--rate",
            "200",
            "--workers",
            "2",
        ],
    ).params
    assert (params["quick"], params["subjects"], params["latency_rate"], params["workers"]) == (
        True,
        "framework,streamscore",
        200.0,
        2,
    )
