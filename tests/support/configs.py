"""Configurations for tests: a stream and subject prefix no other test uses."""

from __future__ import annotations

import itertools
import os

import msgspec

from angzarr_es.config import Config, NatsConfig

_ids = itertools.count(1)


def fresh_config(url: str, **overrides: object) -> Config:
    """A configuration with a stream and subject prefix no other test uses."""
    n = next(_ids)
    tag = f"{os.getpid()}x{n}"
    nats = NatsConfig(url=url, stream_name=f"test-{tag}", subject_prefix=f"t{tag}")
    if overrides:
        nats = msgspec.structs.replace(nats, **overrides)
    return Config(bus=msgspec.structs.replace(Config().bus, nats=nats))


def with_nats(config: Config, **overrides: object) -> Config:
    """`config` with some of its NATS settings replaced."""
    nats = msgspec.structs.replace(config.nats, **overrides)
    return Config(bus=msgspec.structs.replace(config.bus, nats=nats))
