"""Before/after: this checkout's angzarr_es against the one at a git revision.

    python -m benchmarks.compare REV [--samples N]

Both versions run in one process against one nats-server, interleaved in
rounds, so noise from a shared machine hits both alike. The old version is
extracted with `git archive` into a temporary package `angzarr_es_before`
(sharing this checkout's generated protobuf modules, which must not be
registered twice).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import io
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec

import angzarr_es
from angzarr_es.embedded import EmbeddedServer
from angzarr_es.pb import player_pb2
from benchmarks.context import DOMAIN, PREFIX, STREAM
from benchmarks.harness import Case, measure, percentile

_IMPORT = re.compile(r"\bangzarr_es\b(?!\.pb\b)")


def extract(rev: str, into: Path) -> ModuleType:
    """Import angzarr_es as of `rev` under the name `angzarr_es_before`."""
    blob = subprocess.run(
        ["git", "archive", "--format=tar", rev, "angzarr_es"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        for member in tar.getmembers():
            if not member.isfile() or "/pb/" in member.name or not member.name.endswith(".py"):
                continue
            source = tar.extractfile(member)
            assert source is not None
            text = _IMPORT.sub("angzarr_es_before", source.read().decode())
            target = into / member.name.replace("angzarr_es/", "angzarr_es_before/", 1)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    sys.path.insert(0, str(into))
    return importlib.import_module("angzarr_es_before")


def _config(module: ModuleType, url: str, cache_bytes: int) -> Any:
    cfg_mod = importlib.import_module(module.__name__ + ".config")
    # The hot-aggregate cache's bound, for the versions that have one.
    cache = (
        {"cache_bytes": cache_bytes}
        if "cache_bytes" in cfg_mod.NatsConfig.__struct_fields__
        else {}
    )
    nats = cfg_mod.NatsConfig(
        url=url, stream_name=STREAM, subject_prefix=PREFIX, request_timeout=10.0, **cache
    )
    return cfg_mod.Config(bus=msgspec.structs.replace(cfg_mod.Config().bus, nats=nats))


async def compare(
    url: str, before_mod: ModuleType, samples: int, writer_rounds: int = 3, cache_bytes: int = 0
) -> None:
    versions: dict[str, Any] = {}
    for name, module in (("before", before_mod), ("after", angzarr_es)):
        client = await module.connect(config=_config(module, url, cache_bytes))
        await client.provision()
        versions[name] = client
    ev = [player_pb2.FundsDeposited(amount_cents=1, currency="EUR")]
    ev10 = ev * 10

    def appender(store: Any, events: list[Any]) -> Case:
        root = uuid.uuid4()
        state = [0]

        async def run(_: int) -> object:
            state[0] = (await store.append(root, events, expected=state[0])).next_sequence
            return None

        return Case("", run)

    def creator(store: Any) -> Case:
        async def run(_: int) -> object:
            return await store.append(uuid.uuid4(), ev, expected=0)

        return Case("", run)

    async def loader(store: Any, size: int, per_commit: int) -> Case:
        root = uuid.uuid4()
        for first in range(0, size, per_commit):
            await store.append(root, ev * per_commit, expected=first)

        async def run(_: int) -> object:
            history = await store.load(root)
            for e in history.events:
                e.event  # noqa: B018
            assert len(history.events) == size
            return None

        return Case("", run)

    stores = {name: c.store(DOMAIN) for name, c in versions.items()}
    ops: list[tuple[str, dict[str, Case], int]] = [
        ("append 1 (cached)", {n: appender(s, ev) for n, s in stores.items()}, samples),
        ("append 10 (cached)", {n: appender(s, ev10) for n, s in stores.items()}, samples),
        ("append 1 (new aggregate)", {n: creator(s) for n, s in stores.items()}, samples),
    ]
    for size, per_commit in ((10, 1), (100, 1), (100, 10), (1000, 1), (1000, 10)):
        cases = {n: await loader(s, size, per_commit) for n, s in stores.items()}
        ops.append((f"load {size} ({per_commit}/commit)", cases, max(10, samples * 10 // size)))
    print(
        f"{'operation':<26} {'before p50':>11} {'after p50':>10} {'after/before':>12}"
        f" {'best-round before':>18} {'best-round after':>17}"
    )
    for op, cases, n in ops if samples else []:
        named = [Case(name, case.run) for name, case in cases.items()]
        got = {
            m.stats.contender: m.stats
            for m in await measure(op, named, samples=n, rounds=max(2, min(20, n // 20)), warmup=10)
        }
        b, a = got["before"], got["after"]
        print(
            f"{op:<26} {b.p50:9.1f}us {a.p50:8.1f}us {a.p50 / b.p50:12.2f}"
            f" {min(b.round_p50s):16.1f}us {min(a.round_p50s):15.1f}us",
            flush=True,
        )
    rates: dict[str, list[float]] = {"before": [], "after": []}
    for name in ["before", "after"] * writer_rounds:
        store = stores[name]
        lat: list[float] = []

        async def writer(store: Any = store, lat: list[float] = lat) -> None:
            root = uuid.uuid4()
            nxt = 0
            for _ in range(30):
                t0 = time.perf_counter_ns()
                nxt = (await store.append(root, ev, expected=nxt)).next_sequence
                lat.append((time.perf_counter_ns() - t0) / 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(64)))
        rate = len(lat) / (time.perf_counter() - t0)
        rates[name].append(rate)
        print(
            f"64 writers {name:<7} {rate:8.0f} appends/s  p50 {percentile(sorted(lat), 50):.0f}us"
        )
    for name, per_round in rates.items():
        print(f"64 writers {name:<7} median {percentile(sorted(per_round), 50):8.0f} appends/s")
    for client in versions.values():
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare")
    parser.add_argument("rev", help="git revision of the 'before' library")
    parser.add_argument("--samples", type=int, default=2000, help="0: concurrent writers only")
    parser.add_argument(
        "--writer-rounds", type=int, default=3, help="alternating rounds of 64 concurrent writers"
    )
    parser.add_argument(
        "--cache-bytes",
        type=int,
        default=0,
        help="the hot-aggregate cache's bound for the versions that have it (default 0: off, "
        "so that loads read the whole history in both)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="angzarr-before-") as tmp:
        before = extract(args.rev, Path(tmp))
        with EmbeddedServer() as server:
            asyncio.run(
                compare(server.url, before, args.samples, args.writer_rounds, args.cache_bytes)
            )


if __name__ == "__main__":
    main()
