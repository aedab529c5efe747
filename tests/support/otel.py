"""OpenTelemetry's SDK for the tests: one global tracer provider recording into memory.

OpenTelemetry lets a process set its global tracer provider once, so the
first test that asks installs it for the rest of the session. It samples a
span only when its parent is sampled (`ParentBased(ALWAYS_OFF)`): the other
tests, which start no trace, record nothing; `ROOT` starts sampled traces
from a provider of its own (not the global one) into the same exporter.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

__all__ = ["EXPORTER", "ROOT", "install", "span_named"]

EXPORTER = InMemorySpanExporter()
_roots = TracerProvider()
_roots.add_span_processor(SimpleSpanProcessor(EXPORTER))
ROOT = _roots.get_tracer("tests")
"""Starts the traces a test follows (always sampled)."""

_installed: list[TracerProvider] = []


def install() -> InMemorySpanExporter:
    """The global provider set (once), and the exporter emptied."""
    if not _installed:
        provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
        _installed.append(provider)
    EXPORTER.clear()
    return EXPORTER


def span_named(name: str) -> list[ReadableSpan]:
    """The finished spans called `name`, oldest first."""
    return [s for s in EXPORTER.get_finished_spans() if s.name == name]
