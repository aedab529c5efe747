"""OpenTelemetry's SDK for the tests: spans recorded into memory.

OpenTelemetry lets a process set its global tracer provider once, and every
commit appended under a provider carries a trace context; so that the rest of
the suite keeps running with none, `recording()` hands the library a
provider of our own for one test instead (`tracing.set_tracer_provider`). `ROOT` starts the
traces a test follows, from the same provider. The plugin
`-p tests.support.otel` (a fresh process: tests/integration/test_otel.py)
sets that provider as the global one, to check that the library finds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from angzarr_es import tracing

__all__ = ["EXPORTER", "PROVIDER", "ROOT", "recording", "span_named"]

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
ROOT = PROVIDER.get_tracer("tests")
"""Starts the traces a test follows."""


@contextmanager
def recording() -> Iterator[InMemorySpanExporter]:
    """The library's spans recorded inside the block; the exporter emptied."""
    tracing.set_tracer_provider(PROVIDER)
    EXPORTER.clear()
    try:
        yield EXPORTER
    finally:
        tracing.set_tracer_provider(None)


def span_named(name: str) -> list[ReadableSpan]:
    """The finished spans called `name`, oldest first."""
    return [s for s in EXPORTER.get_finished_spans() if s.name == name]


def pytest_configure(config: pytest.Config) -> None:
    """As a plugin: `PROVIDER` is the global tracer provider."""
    trace.set_tracer_provider(PROVIDER)
