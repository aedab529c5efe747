"""Peers: the `eventsourcing` library's recorders (and a PostgreSQL for one of
them), and a codec-only baseline.

The recorders store one row per event; the benchmark gives them the same
protobuf bytes our store writes for each event and decodes each row back to
the protobuf message on load, so the codec work is the same on both sides and
the difference is the storage path.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from google.protobuf.message import Message

from angzarr_es import _codec
from angzarr_es.codec import RecordedEvent
from angzarr_es.config import redact_url
from benchmarks.commits import commit
from benchmarks.contenders import CACHED, POSTGRES, SQLITE

try:
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event
    from eventsourcing.persistence import AggregateRecorder, IntegrityError, StoredEvent
    from eventsourcing.sqlite import SQLiteAggregateRecorder, SQLiteDatastore
except ImportError:  # the `bench` extra is not installed
    AggregateRecorder = None  # type: ignore[assignment,misc]


def available() -> bool:
    """Whether the `eventsourcing` library is installed."""
    return AggregateRecorder is not None


def find_postgres(dsn: str | None) -> tuple[str | None, str]:
    """A PostgreSQL DSN to use, and why (or why not).

    Raises:
        SystemExit: `dsn` was given and does not connect.
    """
    candidates = [dsn] if dsn else []
    if not dsn:
        env = os.environ.get("ANGZARR_BENCH_PG_DSN")
        candidates = [env] if env else ["postgresql://postgres@127.0.0.1:5432/postgres"]
    try:
        import psycopg
    except ImportError:
        return None, "psycopg is not installed"
    for candidate in candidates:
        try:
            with psycopg.connect(candidate, connect_timeout=2) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                sync = conn.execute("SHOW synchronous_commit").fetchone()
                fsync = conn.execute("SHOW fsync").fetchone()
            return candidate, (
                f"PostgreSQL {row[0] if row else '?'}, synchronous_commit="
                f"{sync[0] if sync else '?'}, fsync={fsync[0] if fsync else '?'}"
            )
        except psycopg.Error as exc:
            reason = f"no PostgreSQL at {redact_url(candidate)}: {str(exc).strip()[:120]}"
            if dsn:
                raise SystemExit(f"--pg-dsn: {reason}") from exc
    return None, reason if candidates else "no PostgreSQL DSN"


class Recorder:
    """An eventsourcing AggregateRecorder driven with protobuf events."""

    def __init__(self, name: str, recorder: AggregateRecorder, closer: object) -> None:
        self.name = name
        self.recorder = recorder
        self._closer = closer

    @classmethod
    def sqlite(cls, path: Path) -> Recorder:
        datastore = SQLiteDatastore(db_name=str(path))
        recorder = SQLiteAggregateRecorder(datastore)
        recorder.create_table()
        return cls(SQLITE, recorder, datastore)

    @classmethod
    def postgres(cls, dsn: str) -> Recorder:
        from eventsourcing.postgres import PostgresAggregateRecorder, PostgresDatastore

        env = _postgres_env(dsn)
        datastore = PostgresDatastore(
            dbname=env["POSTGRES_DBNAME"],
            host=env["POSTGRES_HOST"],
            port=env["POSTGRES_PORT"],
            user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"],
            pool_size=70,
        )
        table = f"bench_{uuid.uuid4().hex[:12]}"
        recorder = PostgresAggregateRecorder(datastore, events_table_name=table)
        recorder.create_table()
        return cls(POSTGRES, recorder, datastore)

    def settings(self) -> str:
        """The durability settings the recorder runs with."""
        datastore = self._closer
        if isinstance(datastore, SQLiteDatastore):
            with datastore.transaction(commit=False) as c:
                c.execute("PRAGMA journal_mode")
                journal = c.fetchone()
                c.execute("PRAGMA synchronous")
                sync = c.fetchone()
            modes = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
            return (
                f"{self.name}: journal_mode={journal[0] if journal else '?'}, synchronous="
                f"{modes.get(sync[0], sync[0]) if sync else '?'}"
            )
        return self.name

    def close(self) -> None:
        close = getattr(self._closer, "close", None)
        if close is not None:
            close()

    def append(self, root: uuid.UUID, first: int, events: Sequence[Message]) -> None:
        """Insert one row per event in one transaction (IntegrityError on conflict)."""
        self.recorder.insert_events(
            [
                StoredEvent(
                    originator_id=root,
                    originator_version=first + i,
                    topic=e.DESCRIPTOR.full_name,
                    state=e.SerializeToString(),
                )
                for i, e in enumerate(events)
            ]
        )

    def load(self, root: uuid.UUID) -> list[Message]:
        """Select the aggregate's rows and decode every event (returned, for
        the caller to keep)."""
        out: list[Message] = []
        for row in self.recorder.select_events(root):
            cls = _codec._class_for(row.topic)
            assert cls is not None
            out.append(cls.FromString(row.state))
        return out

    def conflicts(self, root: uuid.UUID, version: int, event: Message) -> bool:
        """Insert at an existing version; True when the recorder rejected it."""
        try:
            self.append(root, version, [event])
        except IntegrityError:
            return True
        return False


def _postgres_env(dsn: str) -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    return {
        "POSTGRES_DBNAME": str(params.get("dbname", "postgres")),
        "POSTGRES_HOST": str(params.get("host", "127.0.0.1")),
        "POSTGRES_PORT": str(params.get("port", "5432")),
        "POSTGRES_USER": str(params.get("user", "postgres")),
        "POSTGRES_PASSWORD": str(params.get("password", "")),
    }


if AggregateRecorder is not None:

    class Wallet(Aggregate):
        """The cached repository's aggregate: one deposit per event, a balance."""

        @event("Opened")
        def __init__(self) -> None:
            self.balance = 0

        @event("Deposited")
        def deposit(self, amount: int) -> None:
            self.balance += amount


class CachedRepository:
    """eventsourcing's own answer to hot aggregates: an `Application` whose
    repository keeps aggregates in its cache and fast-forwards them on `get`
    (one SELECT of the events after the cached version, applied to the cached
    aggregate, which is then deep-copied: the library's defaults). Its events
    are the library's own (JSON), and `get` returns the folded aggregate, not a
    list of events: the closest it has to our hot load, with its own work."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        # An application (so a table) of its own per run: a PostgreSQL shared
        # with other runs keeps its rows apart.
        app_class = type(f"Bench{uuid.uuid4().hex[:10]}", (Application,), {})
        self.app = app_class(env={"AGGREGATE_CACHE_MAXSIZE": "1000", **env})

    @classmethod
    def sqlite(cls, path: Path) -> CachedRepository:
        env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
        return cls(SQLITE + CACHED, env)

    @classmethod
    def postgres(cls, dsn: str) -> CachedRepository:
        env = {"PERSISTENCE_MODULE": "eventsourcing.postgres", **_postgres_env(dsn)}
        return cls(POSTGRES + CACHED, env)

    def create(self, events: int) -> uuid.UUID:
        """A new aggregate of `events` events, saved in one transaction."""
        wallet = Wallet()
        for i in range(events - 1):
            wallet.deposit(i)
        self.app.save(wallet)
        return wallet.id

    def get(self, root: uuid.UUID) -> Wallet:
        wallet: Wallet = self.app.repository.get(root)
        return wallet

    def close(self) -> None:
        self.app.close()


class CodecOnly:
    """Our store's encode and decode work with no I/O: commits kept as bytes in a dict."""

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.commits: dict[str, list[bytes]] = {}

    def append(self, root: str, first: int, events: Sequence[Message]) -> None:
        payload = commit(self.domain, root.encode(), first, events)
        self.commits.setdefault(root, []).append(payload)

    def load(self, root: str) -> list[RecordedEvent]:
        out: list[RecordedEvent] = []
        for payload in self.commits.get(root, []):
            out.extend(_codec.recorded(_codec.decode_book(payload)))
        return out
