"""`angzarr-es index-correlation [--name NAME] [--count N]`: index the
correlation ids of commits other writers stored.

angzarr's bus stamps each commit with its correlation id (in the cover and an
`Angzarr-Correlation` header) but writes no entry in this store's correlation
index, so `events_by_correlation` cannot find those commits by itself. This
command runs one durable projector over every domain whose handler is
`Client.index_correlation`: it adds the entry of each such commit, from the
first commit the consumer has not acknowledged, and keeps following new ones
until Ctrl-C. A commit becomes findable as soon as the projector has handled
it; restarted, it resumes where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import angzarr_es
from angzarr_es import filters
from angzarr_es._cli.common import load_config, usage_error
from angzarr_es._cli.output import printable
from angzarr_es.bus import Delivery

DEFAULT_NAME = "angzarr-es-correlation-index"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name", default=DEFAULT_NAME, help=f"durable consumer name (default {DEFAULT_NAME})"
    )
    parser.add_argument(
        "--count", type=int, default=0, help="exit after N commits were looked at (0: never)"
    )


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    if args.count < 0:
        raise usage_error("--count must be >= 0")
    if not config.nats.jetstream:
        raise usage_error("index-correlation needs JetStream ([bus.nats] jetstream = true)")
    return asyncio.run(_run(config, args.name, args.count))


async def _run(config: angzarr_es.Config, name: str, count: int) -> int:
    async with await angzarr_es.connect(config=config) as client:
        seen = 0
        done: asyncio.Event = asyncio.Event()

        async def index(d: Delivery) -> None:
            nonlocal seen
            await client.index_correlation(d)
            seen += 1
            if count and seen >= count:
                done.set()

        async with client.projector(name, filters.everything(), index):
            banner = (
                f"indexing correlation ids as {name} on {client.connected_url} (Ctrl-C to stop)"
            )
            print(printable(banner), file=sys.stderr, flush=True)
            await done.wait()
    return 0
