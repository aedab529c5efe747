"""A projector in its own process, for crash tests: `python -m tests.support.projector_proc CONFIG_JSON NAME`.

Prints one line per handled commit, before its ack:
`H <root> <first event sequence> <event count> <stream seq> <delivery count>`,
and `READY` once the projector runs. SIGTERM stops it cleanly (`STOPPED`).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import msgspec

import angzarr_es
from angzarr_es import Delivery, StoreTimeout, StoreUnavailable, filters
from angzarr_es.config import Config

ACK_WAIT = 2.0
MAX_ACK_PENDING = 64


async def main(raw: str, name: str) -> None:
    cfg = msgspec.json.decode(raw.encode(), type=Config)
    out = sys.stdout

    async def handle(d: Delivery) -> None:
        out.write(
            f"H {d.root} {d.events[0].sequence} {len(d.events)} "
            f"{d.stream_sequence} {d.delivery_count}\n"
        )
        out.flush()

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with await angzarr_es.connect(config=cfg) as client:
        projector = client.projector(
            name,
            filters.domain("player"),
            handle,
            concurrency=4,
            ack_wait=ACK_WAIT,
            max_ack_pending=MAX_ACK_PENDING,
            backoff=(0.1,),
        )
        # Starting needs the JetStream API (stream and consumer info), which
        # times out while a meta leader is being elected: retry like a supervisor.
        deadline = time.monotonic() + 30
        while True:
            try:
                await projector.start()
                break
            except (StoreTimeout, StoreUnavailable):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)  # retry pause
        try:
            out.write("READY\n")
            out.flush()
            await stop.wait()
        finally:
            await projector.stop()
    out.write("STOPPED\n")
    out.flush()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
