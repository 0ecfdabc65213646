"""Prometheus metrics of one node (its own registry, so several nodes can live in one process)."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import accumulate

import prometheus_client.metrics
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

EXCHANGES = "edugate_exchanges"
EXCHANGES_HELP = "Exchanges by data service, decision and refusing step"
EXCHANGE_SECONDS = "edugate_exchange_seconds"
EXCHANGE_SECONDS_HELP = "Time from request to response, by data service and decision"
# Upper bounds of the latency buckets; an observation on a bound counts in that bucket (Prometheus `le`).
EXCHANGE_SECONDS_BOUNDS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# The `le` label of each bucket, +Inf last, spelled as prometheus_client spells it.
_BUCKET_LE: tuple[str, ...] = (*map(floatToGoString, EXCHANGE_SECONDS_BOUNDS), "+Inf")


class ExchangeLatency:
    """Latency of the exchanges of one data service and decision: per-bucket (not cumulative) counts and their sum."""

    __slots__ = ("buckets", "created", "sum")

    def __init__(self, created: float) -> None:
        self.buckets = [0] * len(_BUCKET_LE)  # the last one is +Inf
        self.sum = 0.0
        self.created = created


class ExchangeTally:
    """Count of the exchanges of one data service, decision and refusing step, and the latency they observe into."""

    __slots__ = ("count", "created", "latency")

    def __init__(self, latency: ExchangeLatency, created: float) -> None:
        self.count = 0
        self.latency = latency
        self.created = created


class ExchangeCollector:
    """Exposes the tallies `Metrics.exchange` keeps as the counter and histogram prometheus_client's own would be."""

    def __init__(
        self, tallies: dict[tuple[str, str, str], ExchangeTally], latencies: dict[tuple[str, str], ExchangeLatency]
    ) -> None:
        self.tallies = tallies
        self.latencies = latencies

    def describe(self) -> list[Metric]:
        # Empty families, so that the registry refuses another metric of the same names.
        return [self._exchanges(), self._exchange_seconds()]

    def collect(self) -> Iterator[Metric]:
        # prometheus_client keeps the PROMETHEUS_DISABLE_CREATED_SERIES / disable_created_metrics() switch here.
        with_created = getattr(prometheus_client.metrics, "_use_created", True)
        exchanges = self._exchanges()
        for labels, tally in self.tallies.items():
            exchanges.add_metric(labels, float(tally.count), created=tally.created if with_created else None)
        yield exchanges
        seconds = self._exchange_seconds()
        for (data_service, decision), latency in self.latencies.items():
            cumulative = map(float, accumulate(latency.buckets))  # Prometheus buckets count all below their bound
            seconds.add_metric([data_service, decision], list(zip(_BUCKET_LE, cumulative, strict=True)), latency.sum)
            if with_created:
                # HistogramMetricFamily takes no created time; add the sample Histogram itself would.
                created_labels = {"data_service": data_service, "decision": decision}
                seconds.add_sample(EXCHANGE_SECONDS + "_created", created_labels, latency.created)
        yield seconds

    @staticmethod
    def _exchanges() -> CounterMetricFamily:
        return CounterMetricFamily(EXCHANGES, EXCHANGES_HELP, labels=["data_service", "decision", "step"])

    @staticmethod
    def _exchange_seconds() -> HistogramMetricFamily:
        return HistogramMetricFamily(EXCHANGE_SECONDS, EXCHANGE_SECONDS_HELP, labels=["data_service", "decision"])


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The two per-exchange metrics are plain Python state rather than prometheus_client objects, whose every
        # update takes a lock, loops over the buckets in Python and handles exemplars. No lock is needed here:
        # exchanges are counted and /metrics is collected on the node's one event-loop thread.
        self._tallies: dict[tuple[str, str, str], ExchangeTally] = {}
        self._latencies: dict[tuple[str, str], ExchangeLatency] = {}
        self.registry.register(ExchangeCollector(self._tallies, self._latencies))
        self.tokens = Counter("edugate_tokens", "Token requests by outcome", ["outcome"], registry=self.registry)
        self.handshake_failures = Counter(
            "edugate_tls_handshake_failures", "TLS handshakes refused", registry=self.registry
        )
        self.register_age = Gauge(
            "edugate_register_age_seconds", "Seconds since the last good register contact", registry=self.registry
        )
        self.register_serial = Gauge(
            "edugate_register_serial", "Serial of the register in force", registry=self.registry
        )
        self.log_writable = Gauge(
            "edugate_log_writable", "1 while the exchange log accepts writes", registry=self.registry
        )
        self.connections = Gauge(
            "edugate_client_connections", "Client connections open on the exchange port", registry=self.registry
        )
        self.connections_refused = Counter(
            "edugate_client_connections_refused",
            "Client connections closed on arrival because max_connections were open",
            registry=self.registry,
        )

    def exchange(self, data_service: str, decision: str, step: str, seconds: float) -> None:
        """Count one exchange and observe its latency."""
        tally = self._tallies.get((data_service, decision, step))
        if tally is None:
            tally = self._open_tally(data_service, decision, step)
        tally.count += 1
        latency = tally.latency
        # bisect_left: the first bound >= seconds, so a value on a bound counts in it; past the last, +Inf.
        latency.buckets[bisect_left(EXCHANGE_SECONDS_BOUNDS, seconds)] += 1
        latency.sum += seconds

    def _open_tally(self, data_service: str, decision: str, step: str) -> ExchangeTally:
        """The tally of a label set seen for the first time, created now (the `_created` prometheus_client exposes)."""
        now = time.time()
        latency = self._latencies.get((data_service, decision))
        if latency is None:
            latency = self._latencies[(data_service, decision)] = ExchangeLatency(now)
        tally = self._tallies[(data_service, decision, step)] = ExchangeTally(latency, now)
        return tally

    def bind(
        self, register_age: Callable[[], float], register_serial: Callable[[], float], log_writable: Callable[[], float]
    ) -> None:
        self.register_age.set_function(register_age)
        self.register_serial.set_function(register_serial)
        self.log_writable.set_function(log_writable)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
