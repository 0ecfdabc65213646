"""The per-exchange metrics: kept as plain state, exposed exactly as prometheus_client's own Counter/Histogram would."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import (
    EXCHANGE_SECONDS,
    EXCHANGE_SECONDS_BOUNDS,
    EXCHANGE_SECONDS_HELP,
    EXCHANGES,
    EXCHANGES_HELP,
    Metrics,
)

Exchange = tuple[str, str, str, float]
# What the parsed exposition says: per family its name, type, help and samples; a `_created` time kept as None.
Family = tuple[str, str, str, list[tuple[str, dict[str, str], float | None]]]

SOME_EXCHANGES: list[Exchange] = [
    ("leermateriaalgebruik", "allowed", "", 0.0031),
    ("leermateriaalgebruik", "denied", "token", 0.0004),
    ("leermateriaalgebruik", "allowed", "", 0.25),
    ("voortgang", "allowed", "", 12.0),
    ("leermateriaalgebruik", "denied", "scope", 0.001),
    ("leermateriaalgebruik", "allowed", "", 0.0),
]


def reference_exposition(exchanges: Sequence[Exchange]) -> str:
    """What prometheus_client's own Counter and Histogram expose for the same exchanges (the code this replaced)."""
    registry = CollectorRegistry()
    counter = Counter(EXCHANGES, EXCHANGES_HELP, ["data_service", "decision", "step"], registry=registry)
    histogram = Histogram(
        EXCHANGE_SECONDS,
        EXCHANGE_SECONDS_HELP,
        ["data_service", "decision"],
        buckets=EXCHANGE_SECONDS_BOUNDS,
        registry=registry,
    )
    for data_service, decision, step, seconds in exchanges:
        counter.labels(data_service, decision, step).inc()
        histogram.labels(data_service, decision).observe(seconds)
    return generate_latest(registry).decode()


def recorded_exposition(exchanges: Sequence[Exchange]) -> str:
    metrics = Metrics()
    for exchange in exchanges:
        metrics.exchange(*exchange)
    return metrics.exposition().decode()


def exchange_families(text: str) -> list[Family]:
    """The parsed families of the two per-exchange metrics, in order, `_created` times left out (they differ)."""
    families: list[Family] = []
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(("edugate_exchanges", "edugate_exchange_seconds")):
            continue
        samples = [(s.name, s.labels, None if s.name.endswith("_created") else s.value) for s in family.samples]
        families.append((family.name, family.type, family.documentation, samples))
    return families


def buckets(text: str, data_service: str, decision: str) -> dict[str, float]:
    return {
        s.labels["le"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == EXCHANGE_SECONDS + "_bucket"
        and s.labels["data_service"] == data_service
        and s.labels["decision"] == decision
    }


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    raise AssertionError(f"no {name} {labels} in the exposition")


@pytest.fixture
def created_series_disabled() -> Iterator[None]:
    disable_created_metrics()
    try:
        yield
    finally:
        enable_created_metrics()


@pytest.mark.parametrize("exchanges", [[], SOME_EXCHANGES[:1], SOME_EXCHANGES], ids=["none", "one", "some"])
def test_the_exposition_of_recorded_exchanges_equals_what_prometheus_clients_counter_and_histogram_expose(
    exchanges: list[Exchange],
) -> None:
    recorded = exchange_families(recorded_exposition(exchanges))
    assert recorded == exchange_families(reference_exposition(exchanges))
    # The `_created` series come with the first exchange, as they do with prometheus_client's labelled metrics.
    created = ["edugate_exchanges_created", "edugate_exchange_seconds_created"] if exchanges else []
    assert sorted(name for name, *_ in recorded) == sorted([EXCHANGES, EXCHANGE_SECONDS, *created])


observed_seconds = st.one_of(
    st.sampled_from(EXCHANGE_SECONDS_BOUNDS), st.floats(min_value=0.0, max_value=20.0, allow_nan=False)
)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["leermateriaalgebruik", "voortgang"]),
            st.sampled_from(["allowed", "denied"]),
            st.sampled_from(["", "token", "scope"]),
            observed_seconds,
        ),
        max_size=30,
    )
)
def test_any_exchanges_expose_the_same_samples_as_prometheus_clients_own_metrics(exchanges: list[Exchange]) -> None:
    assert exchange_families(recorded_exposition(exchanges)) == exchange_families(reference_exposition(exchanges))


def test_the_exposition_text_is_line_for_line_what_it_was_apart_from_created_times() -> None:
    def without_created_times(text: str) -> list[str]:
        return [line.rsplit(" ", 1)[0] if "_created{" in line else line for line in text.splitlines()]

    recorded = without_created_times(recorded_exposition(SOME_EXCHANGES))
    reference = without_created_times(reference_exposition(SOME_EXCHANGES))
    # The node's registry goes on with its other metrics, as it did after the Counter and Histogram.
    assert recorded[: len(reference)] == reference
    assert recorded[len(reference)].startswith("# HELP edugate_tokens_total ")


def test_bucket_counts_are_cumulative_and_an_observation_on_a_bound_counts_in_that_bucket() -> None:
    text = recorded_exposition([("voortgang", "allowed", "", seconds) for seconds in (0.001, 0.0025, 0.003, 10.0)])
    assert buckets(text, "voortgang", "allowed") == {
        "0.001": 1.0,
        "0.0025": 2.0,
        "0.005": 3.0,
        "0.01": 3.0,
        "0.025": 3.0,
        "0.05": 3.0,
        "0.1": 3.0,
        "0.25": 3.0,
        "0.5": 3.0,
        "1.0": 3.0,
        "2.5": 3.0,
        "10.0": 4.0,
        "+Inf": 4.0,
    }


def test_the_inf_bucket_equals_the_count_and_holds_what_lies_past_the_last_bound() -> None:
    observed = [0.0004, 0.3, 10.5, 99.0]
    text = recorded_exposition([("voortgang", "denied", "token", seconds) for seconds in observed])
    labels = {"data_service": "voortgang", "decision": "denied"}
    assert buckets(text, **labels)["10.0"] == 2.0
    assert buckets(text, **labels)["+Inf"] == sample(text, EXCHANGE_SECONDS + "_count", **labels) == 4.0
    assert math.isclose(sample(text, EXCHANGE_SECONDS + "_sum", **labels), sum(observed))


def test_exchanges_are_counted_per_step_but_their_latency_per_data_service_and_decision() -> None:
    text = recorded_exposition(SOME_EXCHANGES)
    denied = {"data_service": "leermateriaalgebruik", "decision": "denied"}
    assert sample(text, EXCHANGES + "_total", **denied, step="token") == 1.0
    assert sample(text, EXCHANGES + "_total", **denied, step="scope") == 1.0
    assert sample(text, EXCHANGE_SECONDS + "_count", **denied) == 2.0


def test_created_is_when_a_label_set_was_first_seen() -> None:
    metrics = Metrics()
    before = time.time()
    metrics.exchange("voortgang", "allowed", "", 0.01)
    after = time.time()
    metrics.exchange("voortgang", "allowed", "", 0.01)
    text = metrics.exposition().decode()
    labels = {"data_service": "voortgang", "decision": "allowed"}
    assert before <= sample(text, EXCHANGES + "_created", **labels, step="") <= after
    assert before <= sample(text, EXCHANGE_SECONDS + "_created", **labels) <= after


def test_created_series_are_left_out_as_prometheus_client_leaves_them_out_when_disabled(
    created_series_disabled: None,
) -> None:
    recorded = recorded_exposition(SOME_EXCHANGES)
    assert "_created" not in recorded
    assert exchange_families(recorded) == exchange_families(reference_exposition(SOME_EXCHANGES))


def test_the_registry_refuses_another_metric_of_an_exchange_metrics_name() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter(EXCHANGES, "again", registry=metrics.registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Histogram(EXCHANGE_SECONDS, "again", registry=metrics.registry)
