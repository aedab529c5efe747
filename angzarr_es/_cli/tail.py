"""`angzarr-es tail FILTER [--count N] [--json]`: live events on a subject filter.

In JetStream mode (the default) it follows the stream through an ephemeral
consumer from "new": it shows exactly the commits the stream stored, never an
append the stream refused (a stale `expected`), and not the stream's past (use
`show` for history). In core mode it is a plain NATS subscription, which sees
every publish on the subjects. Events go to stdout; the banner and notices
about messages that cannot be shown go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import msgspec

import angzarr_es
from angzarr_es._cli.common import add_decoding_options, import_protos, load_config, usage_error
from angzarr_es._cli.events import event_json, record, stamp
from angzarr_es._cli.output import printable, printable_json
from angzarr_es.bus import Delivery
from angzarr_es.errors import AngzarrESError
from angzarr_es.subjects import Subjects

_json = msgspec.json.Encoder()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_decoding_options(parser)
    parser.add_argument(
        "filter", help="subject filter (angzarr.events.player.*) or a domain name (player)"
    )
    parser.add_argument("--count", type=int, default=0, help="exit after N events")


def subject_filter(text: str, prefix: str) -> str:
    """A domain name (`player`), `>` or `*` for every domain, or a subject filter as is.

    Raises:
        CommandError: a filter outside `<prefix>.events.` (exit status 2).
    """
    subjects = Subjects(prefix)
    if text in (">", "*"):
        return subjects.everything()
    if "." not in text and "*" not in text and ">" not in text:
        return subjects.domain_all(text)
    if not text.startswith(subjects.events_root):
        raise usage_error(
            f"filter {text!r} is not under {subjects.events_root} (bus.nats.subject_prefix)"
        )
    return text


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    import_protos(args.proto_module, config)
    if args.count < 0:
        raise usage_error("--count must be >= 0")
    subject = subject_filter(args.filter, config.nats.subject_prefix)
    return asyncio.run(_run(args, config, subject))


def _skip_notice(subject: str, stream_seq: int, exc: AngzarrESError) -> None:
    print(printable(f"skipped a message on {subject}: {exc}"), file=sys.stderr, flush=True)


def _banner(subject: str, url: str) -> None:
    # Notices go to stderr: stdout carries only events (JSON lines with --json).
    print(printable(f"tailing {subject} on {url} (Ctrl-C to stop)"), file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace, config: angzarr_es.Config, subject: str) -> int:
    printer = _Printer(args)
    async with await angzarr_es.connect(config=config) as client:
        if config.nats.jetstream:
            # From "new" through a consumer: only what the stream stored.
            async with client.subscribe(subject, start="new", on_skip=_skip_notice) as sub:
                _banner(subject, client.connected_url)
                async for d in sub:
                    if printer.show(d):
                        return 0
            return 0
        # Core mode: a plain subscription, which sees every publish.
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def on_commit(d: Delivery) -> None:
            if ended.done():
                return
            try:
                if printer.show(d):
                    ended.set_result(None)
            except Exception as exc:  # noqa: BLE001 - raised below (a closed stdout, say)
                ended.set_exception(exc)

        async with await client.bus.subscribe(subject, on_commit, on_skip=_skip_notice):
            _banner(subject, client.connected_url)
            await ended
    return 0


class _Printer:
    """Prints events, one line each; `show` is True once `--count` are out."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json = bool(args.json)
        self.count = int(args.count)
        self.seen = 0

    def show(self, d: Delivery) -> bool:
        domain, root, edition = d.domain, d.root, d.edition
        trace = d.headers.get("traceparent", "")
        where = f"{domain}/{root}" + (f"@{edition}" if edition else "")
        for ev in d.events:
            if self.json:
                extra = {"traceparent": trace, "edition": edition}
                line = printable_json(_json.encode(record(domain, root, ev, **extra)).decode())
            else:
                body = _json.encode(event_json(ev)).decode()
                line = printable(
                    f"{stamp(ev.created_at)}  {where}  #{ev.sequence}  {ev.type_name}  {body}"
                )
            print(line, flush=True)
            self.seen += 1
            if self.count and self.seen >= self.count:
                return True
        return False
