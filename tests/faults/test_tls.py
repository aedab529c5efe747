"""Asking for TLS gives TLS or an error, never a silent plaintext connection."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import angzarr_es
from angzarr_es import ConfigError, StoreUnavailable
from angzarr_es.embedded import EmbeddedServer
from tests.support.authkit import TLSFiles
from tests.support.cluster import eventually
from tests.support.configs import fresh_config

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def plaintext() -> Iterator[EmbeddedServer]:
    with EmbeddedServer() as server:
        yield server


def _tls_versions(server: EmbeddedServer) -> list[str | None]:
    with urllib.request.urlopen(server.monitor_url + "/connz", timeout=5) as reply:
        connz = json.loads(reply.read())
    return [c.get("tls_version") for c in connz.get("connections", [])]


@pytest.mark.parametrize("how", ["tls-url", "tls_ca"])
async def test_tls_asked_of_a_plaintext_server_is_refused(
    plaintext: EmbeddedServer, tmp_path: Path, how: str
) -> None:
    tls = TLSFiles(tmp_path / "tls")
    if how == "tls-url":
        config = fresh_config(plaintext.url.replace("nats://", "tls://"))
    else:
        config = fresh_config(plaintext.url, tls_ca=str(tls.ca))
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="TLS was asked for") as info:
        await angzarr_es.connect(config=config)
    assert time.monotonic() - started < 10
    assert "nothing was sent" in str(info.value)
    # No connection stays open (the server drops the refused one when it sees it close).

    async def gone() -> bool | None:
        return True if _tls_versions(plaintext) == [] else None

    await eventually(gone, timeout=5, what="the refused connection to close")


async def test_a_server_offering_tls_is_connected_with_tls(tmp_path: Path) -> None:
    tls = TLSFiles(tmp_path / "tls")
    optional = tls.server_config() + "allow_non_tls: true\n"
    with EmbeddedServer(extra_config=optional) as server:
        # nats-py alone would stay in plaintext here: the server does not require TLS.
        url = server.url.replace("nats://", "tls://")
        async with await angzarr_es.connect(config=fresh_config(url, tls_ca=str(tls.ca))) as c:
            assert c.server_version
            versions = _tls_versions(server)
        assert versions
        assert all(v and v.startswith("1.") for v in versions), versions


@pytest.mark.parametrize("setting", ["tls_ca", "tls_cert"])
async def test_tls_files_that_are_missing_or_wrong_are_config_errors(
    plaintext: EmbeddedServer, tmp_path: Path, setting: str
) -> None:
    missing = fresh_config(plaintext.url, **{setting: str(tmp_path / "nope.pem")})
    with pytest.raises(ConfigError, match=f"bus.nats.{setting}: no such file"):
        await angzarr_es.connect(config=missing)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    wrong = fresh_config(plaintext.url, **{setting: str(junk)})
    with pytest.raises(ConfigError, match=f"bus.nats.{setting}"):
        await angzarr_es.connect(config=wrong)
