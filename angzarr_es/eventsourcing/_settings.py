"""The module's settings, read from the application's environment.

Every key is read with `env.get`, so `<APPNAME>_<KEY>` overrides `<KEY>`, the
way the library reads its own settings.

    NATS_URL              nats://localhost:4222; several, comma-separated, for a cluster
    ANGZARR_ES_STREAM     eventsourcing: the stream; its subjects are `<stream>.>`
    ANGZARR_ES_REPLICAS   1: replicas of a stream this module creates (1, 3 or 5)
    ANGZARR_ES_TIMEOUT    30: seconds one recorder call may take, retries included
    CREATE_TABLE          yes: create (or bring up to date) the stream when a recorder is made
    ORIGINATOR_ID_TYPE    uuid (default) or text
    NATS_REQUEST_TIMEOUT  2: seconds to wait for one answer from NATS
    NATS_CONNECT_TIMEOUT  2
    NATS_DEPOSED_LEADER_WAIT  2: seconds an insert re-checks refusals that prove
                          nothing (a deposed stream leader's) before its outcome is unknown
    NATS_CREDENTIALS      a .creds file (JWT and nkey seed)
    NATS_NKEY_SEED        an nkey seed
    NATS_USER, NATS_PASSWORD, NATS_TOKEN
    NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY   PEM files; any of them (or a tls:// URL) means TLS

An invalid value raises `OSError` naming the key, as the library's own
persistence modules do.
"""

from __future__ import annotations

import math
import re
from typing import Literal

import msgspec
from eventsourcing.utils import Environment, strtobool

from angzarr_es.config import DEFAULT_URL, Config, NatsConfig
from angzarr_es.errors import ConfigError

__all__ = ["Settings", "create_stream", "read_settings"]

STREAM = "ANGZARR_ES_STREAM"
REPLICAS = "ANGZARR_ES_REPLICAS"
TIMEOUT = "ANGZARR_ES_TIMEOUT"
CREATE_TABLE = "CREATE_TABLE"
ORIGINATOR_ID_TYPE = "ORIGINATOR_ID_TYPE"
NATS_URL = "NATS_URL"

# NatsConfig field <- environment key.
_CONNECTION_KEYS = {
    "credentials": "NATS_CREDENTIALS",
    "nkey_seed": "NATS_NKEY_SEED",
    "user": "NATS_USER",
    "password": "NATS_PASSWORD",
    "token": "NATS_TOKEN",
    "tls_ca": "NATS_TLS_CA",
    "tls_cert": "NATS_TLS_CERT",
    "tls_key": "NATS_TLS_KEY",
}
_TIMEOUT_KEYS = {  # each 2 seconds by default
    "request_timeout": "NATS_REQUEST_TIMEOUT",
    "connect_timeout": "NATS_CONNECT_TIMEOUT",
    "deposed_leader_wait": "NATS_DEPOSED_LEADER_WAIT",
}
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

OriginatorIdType = Literal["uuid", "text"]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """What a factory was configured with."""

    nats: NatsConfig
    """Servers, credentials, TLS and request timeouts."""
    stream: str
    """The stream's name; its subjects are `<stream>.>`."""
    replicas: int
    """Replicas of a stream this module creates."""
    originator_id_type: OriginatorIdType
    """How originator ids come back from reads: `uuid.UUID` or `str`."""
    call_timeout: float
    """Seconds one recorder call may take."""


def read_settings(env: Environment) -> Settings:
    """The settings in `env`.

    Raises:
        OSError: a value is invalid (the message names its key).
    """
    stream = env.get(STREAM) or "eventsourcing"
    if not _STREAM_NAME.fullmatch(stream):
        raise OSError(f"{STREAM}={stream!r}: a stream name is 1-64 characters of [A-Za-z0-9_-]")
    id_type = (env.get(ORIGINATOR_ID_TYPE) or "uuid").lower()
    if id_type not in ("uuid", "text"):
        raise OSError(f"{ORIGINATOR_ID_TYPE}={id_type!r}: must be 'uuid' or 'text'")
    replicas = _number(env, REPLICAS, 1)
    if replicas not in (1, 3, 5):
        raise OSError(f"{REPLICAS}={env.get(REPLICAS)!r}: must be 1, 3 or 5")
    fields: dict[str, object] = {"url": env.get(NATS_URL) or DEFAULT_URL, "name": "angzarr-es"}
    for field, key in _CONNECTION_KEYS.items():
        value = env.get(key)
        if value:
            fields[field] = value
    for field, key in _TIMEOUT_KEYS.items():
        fields[field] = _number(env, key, 2.0)
    try:
        nats = msgspec.convert(fields, NatsConfig)
        Config(bus=msgspec.structs.replace(Config().bus, nats=nats)).validate("<environment>")
    except (ConfigError, msgspec.ValidationError) as exc:
        raise OSError(f"invalid NATS settings: {exc}") from exc
    return Settings(
        nats=nats,
        stream=stream,
        replicas=int(replicas),
        originator_id_type="uuid" if id_type == "uuid" else "text",
        call_timeout=_number(env, TIMEOUT, 30.0),
    )


def create_stream(env: Environment) -> bool:
    """Whether recorders made now create the stream (CREATE_TABLE, read at each call).

    Raises:
        OSError: not a truth value.
    """
    value = env.get(CREATE_TABLE) or "yes"
    try:
        return strtobool(value)
    except ValueError as exc:
        raise OSError(f"{CREATE_TABLE}={value!r}: {exc}") from exc


def _number(env: Environment, key: str, default: float) -> float:
    raw = env.get(key)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise OSError(f"{key}={raw!r}: not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise OSError(f"{key}={raw!r}: must be a positive number")
    return value
