"""A pytest plugin that hides OpenTelemetry, as if the `otel` extra were not
installed: `python -m pytest -p tests.support.no_otel ...`.

A `None` entry in `sys.modules` makes every `import opentelemetry...` raise
ImportError; the plugin is loaded before the test modules (and with them
angzarr_es) are imported.
"""

from __future__ import annotations

import sys

sys.modules["opentelemetry"] = None  # type: ignore[assignment]
