"""Fixtures of the command-line tests: a config file, and a client that does
not provision (the commands under test do)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import angzarr_es
from angzarr_es.config import Config
from tests.support import jsadmin
from tests.support.cli import write_config


@pytest.fixture
def conf(config: Config, tmp_path: Path) -> Path:
    """A TOML file for this test's server, stream and subject prefix."""
    return write_config(tmp_path / "angzarr.toml", config)


@pytest.fixture
async def client(config: Config) -> AsyncIterator[angzarr_es.Client]:
    """A connected client; the test's stream (if anything made it) is deleted afterwards."""
    async with await angzarr_es.connect(config=config) as c:
        yield c
        await jsadmin.delete_stream(c, config.nats.stream_name)
