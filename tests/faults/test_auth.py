"""Authentication and authorization against real servers configured in the test:
user/password, token, nkey, a .creds file (operator/account/user JWTs made
here), TLS with a CA made here, and an account limited to player aggregates."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import angzarr_es
from angzarr_es import ConfigError, PermissionDenied, StoreUnavailable
from angzarr_es.embedded import EmbeddedServer
from tests.support import jsadmin
from tests.support.angzarr_bus import AngzarrBus, book
from tests.support.authkit import Operator, TLSFiles, user_key
from tests.support.cli import add_nats_settings, run_cli, write_config
from tests.support.configs import fresh_config
from tests.support.events import deposit

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[EmbeddedServer] = []

    def start(extra: str) -> EmbeddedServer:
        server = EmbeddedServer(monitor_port=None, extra_config=extra).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.cleanup()


async def round_trip(url: str, **auth: Any) -> None:
    """Connect with `auth`, provision, append and load, clean up."""
    config = fresh_config(url, **auth)
    async with await angzarr_es.connect(config=config) as client:
        await client.provision()
        store = client.store("player")
        await store.append("p", [deposit(1)], expected=0)
        assert (await store.load("p")).next_sequence == 1
        await jsadmin.delete_stream(client, config.nats.stream_name)


async def refused(url: str, **auth: Any) -> PermissionDenied | StoreUnavailable:
    """Connecting with `auth` fails with one typed error, quickly."""
    started = time.monotonic()
    with pytest.raises((PermissionDenied, StoreUnavailable)) as info:
        await angzarr_es.connect(config=fresh_config(url, **auth))
    assert time.monotonic() - started < 10
    assert isinstance(info.value, (PermissionDenied, StoreUnavailable))
    return info.value


async def test_user_and_password(serve: Any) -> None:
    server = serve("authorization { user: app, password: s3cret }")
    await round_trip(server.url, user="app", password="s3cret")
    err = await refused(server.url, user="app", password="wrong")
    assert isinstance(err, PermissionDenied), err
    err = await refused(server.url)
    assert isinstance(err, PermissionDenied), err


async def test_token(serve: Any) -> None:
    server = serve("authorization { token: t0ken-123 }")
    await round_trip(server.url, token="t0ken-123")
    err = await refused(server.url, token="nope")
    assert isinstance(err, PermissionDenied), err


async def test_nkey(serve: Any) -> None:
    user, stranger = user_key(), user_key()
    server = serve(f"authorization {{ users = [ {{ nkey: {user.public} }} ] }}")
    await round_trip(server.url, nkey_seed=user.seed.decode())
    err = await refused(server.url, nkey_seed=stranger.seed.decode())
    assert isinstance(err, PermissionDenied), err


async def test_creds_file_with_operator_jwts(serve: Any, tmp_path: Path) -> None:
    """Decentralised auth: operator, account and user JWTs signed with nkeys made here."""
    op = Operator()
    server = serve(op.server_config())
    good = op.creds(tmp_path / "app.creds")
    await round_trip(server.url, credentials=str(good))
    # A user signed by a key the operator never vouched for.
    forged = op.creds(tmp_path / "forged.creds", signer=Operator().account)
    err = await refused(server.url, credentials=str(forged))
    assert isinstance(err, PermissionDenied), err
    # A missing file is the configuration's fault, found before connecting.
    with pytest.raises(ConfigError, match=r"bus\.nats\.credentials: cannot read .*missing\.creds"):
        await angzarr_es.connect(
            config=fresh_config(server.url, credentials=str(tmp_path / "missing.creds"))
        )


async def test_tls_with_a_ca_made_in_the_test(serve: Any, tmp_path: Path) -> None:
    tls = TLSFiles(tmp_path / "tls")
    server = serve(tls.server_config())
    await round_trip(f"tls://127.0.0.1:{server.port}", tls_ca=str(tls.ca))
    other = TLSFiles(tmp_path / "other", name="someone else's CA")
    err = await refused(f"tls://127.0.0.1:{server.port}", tls_ca=str(other.ca))
    assert isinstance(err, StoreUnavailable)
    assert "certificate" in str(err).lower(), err


PLAYER_ONLY = """
authorization {{
  users = [
    {{ user: admin, password: a }}
    {{ user: players, password: p, permissions: {{
        publish: {{ allow: ["{prefix}.events.player.>", "$JS.API.>"] }}
        subscribe: {{ allow: ["_INBOX.>"] }}
    }} }}
  ]
}}
"""


async def test_an_account_limited_to_player_aggregates(serve: Any) -> None:
    probe = fresh_config("nats://x")
    prefix = probe.nats.subject_prefix
    server = serve(PLAYER_ONLY.format(prefix=prefix))
    # Same stream and prefix for the admin (provisions) and the limited user.
    admin_cfg = fresh_config(server.url, user="admin", password="a", subject_prefix=prefix)
    names = {"stream_name": admin_cfg.nats.stream_name, "subject_prefix": prefix}
    user_cfg = fresh_config(server.url, user="players", password="p", **names)
    timeout = user_cfg.nats.request_timeout
    async with await angzarr_es.connect(config=admin_cfg) as admin:
        await admin.provision()
        async with await angzarr_es.connect(config=user_cfg) as client:
            players, hands = client.store("player"), client.store("hand")
            await players.append("p", [deposit(1)], expected=0)
            assert (await players.load("p")).next_sequence == 1
            started = time.monotonic()
            with pytest.raises(PermissionDenied) as info:
                await hands.append("h", [deposit(1)], expected=0)
            elapsed = time.monotonic() - started
            assert elapsed < timeout / 2, f"denial took {elapsed:.2f}s: a hang, not an error"
            assert "hand" in str(info.value)
            # A denial fails only the request it concerns: player traffic in
            # flight at the same moment is unaffected.
            results = await asyncio.gather(
                hands.append("h2", [deposit(1)], expected=0),
                *(players.append(f"q{i}", [deposit(i)], expected=0) for i in range(20)),
                *(players.load("p") for _ in range(20)),
                return_exceptions=True,
            )
            assert isinstance(results[0], PermissionDenied)
            assert not [r for r in results[1:] if isinstance(r, BaseException)], results
            # The connection survived the denials.
            await players.append("p", [deposit(2)], expected=1)
        assert (await admin.store("hand").load("h")).events == []
        await jsadmin.delete_stream(admin, admin_cfg.nats.stream_name)


async def test_an_account_that_may_not_subscribe_to_inboxes(serve: Any) -> None:
    server = serve(
        "authorization { users = [ { user: mute, password: m, permissions: {"
        ' subscribe: { deny: ["_INBOX.>"] } } } ] }'
    )
    started = time.monotonic()
    with pytest.raises(PermissionDenied, match="_INBOX"):
        await angzarr_es.connect(config=fresh_config(server.url, user="mute", password="m"))
    assert time.monotonic() - started < 2


NO_STREAM_UPDATES = """
authorization {
  users = [
    { user: admin, password: a }
    { user: app, password: p, permissions: { publish: { deny: ["$JS.API.STREAM.UPDATE.>"] } } }
  ]
}
"""


async def test_an_angzarr_stream_that_may_not_be_updated_is_kept_and_read_from_its_leader(
    serve: Any, tmp_path: Path
) -> None:
    """Per-domain layout, an account that may not update streams: angzarr's
    stream (allow_direct off) is adopted as it is, every read falls back to
    its leader, and provision and status say so (API and command line)."""
    server = serve(NO_STREAM_UPDATES)
    probe = fresh_config(server.url, user="app", password="p", stream_layout="per-domain")
    prefix = probe.nats.subject_prefix
    root = uuid.uuid4()
    async with await AngzarrBus.connect(f"nats://admin:a@127.0.0.1:{server.port}", prefix) as bus:
        await bus.publish(book("player", root, 0, [deposit(1), deposit(2)]))
        stream = bus.stream_name("player")
    async with await angzarr_es.connect(config=probe) as client:
        plan = await client.provision()
        (kept,) = plan.domains
        assert (kept.config.name, kept.action) == (stream, "kept")
        assert "allow_direct" in kept.changes
        assert "STREAM.UPDATE" in kept.blocker.upper(), kept.blocker
        store = client.store("player")
        assert [e.sequence for e in (await store.load(root)).events] == [0, 1]
        await store.append(root, [deposit(3)], expected=2)
        assert [e.sequence async for e in store.iter(root)] == [0, 1, 2]
        assert [r async for r in store.list_roots()] == [str(root)]
        assert [d async for d in client.list_domains()] == ["player"]
        health = await client.health()
        assert (
            f"stream {stream} does not serve Direct Get (allow_direct is off): reads go to its "
            "leader, one request per commit"
        ) in health.problems
    conf = add_nats_settings(
        write_config(tmp_path / "angzarr-es.toml", probe),
        'user = "app"\npassword = "p"\nstream_layout = "per-domain"\n',
    )
    done = await asyncio.to_thread(run_cli, "provision", "--config", str(conf))
    assert done.returncode == 0, done.stderr
    assert (
        f"domain stream {stream} (domain player) is used as it is; the server refused the update"
    ) in done.stdout
    assert "reads without allow_direct go to its leader" in done.stdout
    done = await asyncio.to_thread(run_cli, "status", "--config", str(conf))
    assert done.returncode == 1, done.stdout
    assert f"stream {stream} does not serve Direct Get (allow_direct is off)" in done.stdout
