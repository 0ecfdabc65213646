"""Prometheus metrics of one node (its own registry, so several nodes can live in one process)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.exchanges = Counter(
            "edugate_exchanges",
            "Exchanges by data service, decision and refusing step",
            ["data_service", "decision", "step"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "edugate_exchange_seconds",
            "Time from request to response, by data service and decision",
            ["data_service", "decision"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
            registry=self.registry,
        )
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

        # The labelled children an exchange touches, kept rather than looked up (validated, locked) each time.
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def exchange(self, data_service: str, decision: str, step: str, seconds: float) -> None:
        """Count one exchange and observe its latency."""
        key = (data_service, decision, step)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.exchanges.labels(data_service, decision, step),
                self.latency.labels(data_service, decision),
            )
        children[0].inc()
        children[1].observe(seconds)

    def bind(
        self, register_age: Callable[[], float], register_serial: Callable[[], float], log_writable: Callable[[], float]
    ) -> None:
        self.register_age.set_function(register_age)
        self.register_serial.set_function(register_serial)
        self.log_writable.set_function(log_writable)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
