"""Poison input, fuzzed: whatever bytes arrive, the pipeline ends each record as one outcome.

In: hypothesis-generated event values (invalid UTF-8, deep nesting, huge and
non-finite numbers, empty values, wrong types, objects where strings belong, long
strings, duplicate keys) fed to the decode and validate stages and to the whole
pipeline (fake model and store). Out: every record is a prediction or a dead letter
whose error is a :class:`PipelineError`; nothing else is ever raised, so the agent
never dies. Derandomized, no example database: the same examples run in CI each time.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streams.codec import decode_event, encode
from streams.contract import validate_event, validate_with_schema
from streams.errors import ContractViolation, PipelineError
from streams.pipeline import dead_letter
from tests.unit.streams.test_pipeline import event, inbound, make

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FIELDS = ["event_id", "event_time", "user_id", "merchant_id", "amount", "currency", "channel"]
FIELDS += ["country"]

# Leaves a JSON value can be, including the numbers and strings that hurt.
huge_ints = st.integers(min_value=2**63, max_value=10**400) | st.integers(
    max_value=-(2**63), min_value=-(10**400)
)
hostile_strings = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\ud800",  # lone surrogate: not encodable as UTF-8
        "x" * 100_000,
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2026-11-21T10:00:00Z",
        "NaN",
        "1e400",
        "alice@example.com",
    ]
)
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | huge_ints
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | hostile_strings
)
json_like = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _deep(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def _number_literal(text: str) -> bytes:
    return b'{"event_id":"e","amount":' + text.encode() + b"}"


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    """A valid event with some fields replaced, dropped or duplicated, encoded by hand
    where orjson would refuse (NaN, huge ints, lone surrogates, duplicate keys)."""
    base: dict[str, Any] = event(draw(st.text(min_size=1, max_size=8)))
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        if draw(st.booleans()):
            base[name] = draw(json_like)
        else:
            base.pop(name)
    parts = [f'"{k}":{_literal(v)}' for k, v in base.items()]
    if draw(st.booleans()):  # a duplicate key: the last one wins in orjson
        dup = draw(st.sampled_from(FIELDS))
        parts.append(f'"{dup}":{_literal(draw(json_like))}')
    return ("{" + ",".join(parts) + "}").encode("utf-8", errors="surrogatepass")


def _literal(value: Any) -> str:
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        out = '"'
        for ch in value:
            if ch in '"\\' or ord(ch) < 0x20 or 0xD800 <= ord(ch) <= 0xDFFF:
                out += f"\\u{ord(ch):04x}"
            else:
                out += ch
        return out + '"'
    if isinstance(value, list):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_literal(str(k))}:{_literal(v)}" for k, v in value.items()) + "}"
    return encode(value).decode()


raw_values = (
    mutated_events()
    | st.binary(max_size=200)  # invalid UTF-8 among it
    | st.integers(min_value=1, max_value=5000).map(_deep)
    | st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "-0", "1" * 400, "1e-400"]).map(
        _number_literal
    )
    | st.sampled_from([b"", b"null", b"{}", b"[]", b'""', b"\xff\xfe", b'{"a":"\xc3\x28"}'])
    | st.none()
)


def _check_error(exc: PipelineError, raw: bytes | None) -> None:
    out = dead_letter(inbound([raw])[0], exc)  # headers must be buildable too
    headers = dict(out.headers)
    assert headers["error.class"] == type(exc).__name__.encode()
    assert out.value == (raw or b"")
    if isinstance(exc, ContractViolation):
        assert exc.message.startswith(exc.field + ": ")
        assert exc.field.split(".")[0] in FIELDS or exc.field == "event"


@FUZZ
@given(raw=raw_values)
@example(raw=encode(event("e1", event_time="0001-01-01T00:00:00+01:00")))
def test_decode_and_validate_end_in_an_event_or_a_pipeline_error(raw: bytes | None) -> None:
    try:
        obj = validate_event(decode_event(raw, 65536))
    except PipelineError as exc:
        _check_error(exc, raw)
    else:
        assert isinstance(obj["amount"], float) and obj["event_time"].tzinfo is not None


@st.composite
def mutated_objects(draw: st.DrawFn) -> dict[str, Any]:
    """Decoded objects as any producer's JSON library may hand them over: each contract
    field kept, dropped or replaced by any value (ints beyond float range included)."""
    obj: dict[str, Any] = event("e1")
    for name in FIELDS:
        choice = draw(st.sampled_from(["keep", "keep", "drop", "replace", "hostile"]))
        if choice == "drop":
            obj.pop(name)
        elif choice == "replace":
            obj[name] = draw(json_like)
        elif choice == "hostile":
            obj[name] = draw(hostile_strings | huge_ints | st.floats())
    return obj


@FUZZ
@given(obj=mutated_objects())
# What the fuzzer found, kept as fixed examples (each was an OverflowError).
@example(obj=event("e1", event_time=10**400))
@example(obj=event("e1", amount=10**400))
@example(obj=event("e1", event_time="0001-01-01T00:00:00+01:00"))
@example(obj=event("e1", event_time="9999-12-31T23:59:59-01:00"))
def test_any_decoded_object_ends_in_an_event_or_a_pipeline_error(obj: dict[str, Any]) -> None:
    for check in (validate_event, lambda o: validate_with_schema(o, {"amount": "number"})):
        try:
            check(obj)
        except PipelineError as exc:
            _check_error(exc, b"{}")
            # Messages never repeat a string value (personal data may be in any field).
            for text in _strings(obj):
                assert text not in exc.message


def _strings(value: Any) -> list[str]:
    """String leaves long enough that finding one in a message is no coincidence."""
    if isinstance(value, str):
        return [value] if len(value) >= 12 else []
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@FUZZ
@given(raw=raw_values)
def test_a_manifest_schema_ends_in_an_event_or_a_pipeline_error(raw: bytes | None) -> None:
    schema = {"amount": "number", "user_id": "string", "merchant_id": "string"}
    try:
        validate_with_schema(decode_event(raw, 65536), schema)
    except PipelineError as exc:
        _check_error(exc, raw)


@settings(FUZZ, max_examples=50)
@given(values=st.lists(raw_values, min_size=1, max_size=8))
async def test_every_poisoned_batch_ends_as_one_outcome_per_record(
    values: list[bytes | None],
) -> None:
    pipeline = make(enrich_backoff_s=0)
    out = await pipeline.process(inbound(values))
    assert len(out) == len(values)
    for o, raw in zip(out, values, strict=True):
        assert o.destination in {"predictions", "deadletter"}
        if o.destination == "deadletter":
            assert o.value == (raw or b"")
