"""How the benchmarks connect: as `angzarr-es bench --config PATH` says, or the defaults.

A module of its own, importing only the configuration (and the connection
module it maps it with), for the child processes that measure memory.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from angzarr_es._nats.credentials import auth_options
from angzarr_es.config import Config, NatsConfig

CONFIG_ENV = "ANGZARR_ES_BENCH_CONFIG"
"""Set by `angzarr-es bench --config PATH`: connect as that file says."""


def connection(url: str) -> NatsConfig:
    """How to reach `url`: the settings of the file `angzarr-es bench --config`
    named (credentials, TLS, timeouts) when there is one, else the defaults.
    The run's own streams, prefixes and layouts are set by each case."""
    path = os.environ.get(CONFIG_ENV)
    base = Config.load(path, env={}).nats if path else NatsConfig()
    return msgspec.structs.replace(base, url=url)


def nats_options(nats: NatsConfig) -> dict[str, Any]:
    """nats-py's connect options for the credentials and TLS of `nats`, for
    the raw client (the floor) to connect as the library does."""
    return auth_options(nats)
