"""Durations in the configuration file: seconds, or strings such as "7d",
"1h30m" or "500ms", read before the file's table is typed."""

from __future__ import annotations

import re
from typing import Any

from angzarr_es.errors import ConfigError

__all__ = ["DURATIONS", "EXAMPLES", "is_duration_key", "read_durations"]

# The `[bus.nats]` settings that are durations (seconds, or "90s" in a file).
DURATIONS = (
    "max_age",
    "duplicate_window",
    "request_timeout",
    "connect_timeout",
    "deposed_leader_wait",
    "stream_discovery_interval",
)


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION = re.compile(r"(?:(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d|w|y))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d|w|y)")
EXAMPLES = '"7d", "12h", "1h30m", "90s" or "500ms"'
_KEY = re.compile(
    rf"bus\.nats\.({'|'.join(DURATIONS)}|consumers\[\d+\]\.(ack_wait|backoff(\[\d+\])?))"
)


def _parse_duration(text: str) -> float:
    """Seconds in `text`: a number, or number-unit pairs with units ms, s, m,
    h, d, w and y (365 days), e.g. "7d", "1h30m", "1.5s".

    Raises:
        ValueError: not such a duration.
    """
    compact = text.strip().replace(" ", "")
    try:
        return float(compact)
    except ValueError:
        pass
    if not _DURATION.fullmatch(compact):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(compact))


def read_durations(table: dict[str, Any], where: str) -> None:
    """Replace the duration strings of a decoded file by seconds, in place.

    Raises:
        ConfigError: a string that is not a duration.
    """
    bus = table.get("bus")
    nats = bus.get("nats") if isinstance(bus, dict) else None
    if not isinstance(nats, dict):
        return
    for key in DURATIONS:
        if key in nats:
            nats[key] = _seconds(nats[key], f"bus.nats.{key}", where)
    consumers = nats.get("consumers")
    for i, consumer in enumerate(consumers if isinstance(consumers, list) else []):
        if not isinstance(consumer, dict):
            continue
        at = f"bus.nats.consumers[{i}]"
        if "ack_wait" in consumer:
            consumer["ack_wait"] = _seconds(consumer["ack_wait"], f"{at}.ack_wait", where)
        backoff = consumer.get("backoff")
        if isinstance(backoff, list):
            consumer["backoff"] = [
                _seconds(v, f"{at}.backoff[{j}]", where) for j, v in enumerate(backoff)
            ]


def _seconds(value: object, key: str, where: str) -> object:
    """A duration string as seconds; any other value as it is (msgspec judges it).

    Raises:
        ConfigError: a string that is not a duration.
    """
    if not isinstance(value, str):
        return value
    try:
        return _parse_duration(value)
    except ValueError:
        raise ConfigError(
            f"{where}: {key}: {value!r} is not a duration: give seconds (a number) "
            f"or a string such as {EXAMPLES}"
        ) from None


def is_duration_key(key: str) -> bool:
    """Whether the setting at `key` (`bus.nats.consumers[0].ack_wait`) is a duration."""
    return _KEY.fullmatch(key) is not None
