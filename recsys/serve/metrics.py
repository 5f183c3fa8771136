"""Prometheus metrics of one app instance, in its own registry (never the process-global one)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServeMetrics:
    """Request count by route/method/status, latency by route, unhandled errors, model version, reloads,
    connections the server closed before a request."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "recsys_http_requests", "HTTP requests", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "recsys_http_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "recsys_http_unhandled_errors", "Requests that raised (answered 500)", ["route"], registry=self.registry
        )
        self.model_info = Gauge(
            "recsys_model_info", "The model version serving (value 1)", ["name", "version"], registry=self.registry
        )
        self.reloads = Counter("recsys_model_reloads", "Model reloads by outcome", ["outcome"], registry=self.registry)
        self.connections_closed = Counter(
            "recsys_http_connections_closed",
            "Connections closed by the server before a request: header_timeout or max_connections",
            ["reason"],
            registry=self.registry,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def set_model(self, name: str, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name, version).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
