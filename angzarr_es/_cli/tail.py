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
from collections.abc import Mapping

import msgspec

import angzarr_es
from angzarr_es import codec
from angzarr_es._cli.common import import_protos, load_config
from angzarr_es._cli.events import event_json, record, stamp
from angzarr_es.bus import CatchUp
from angzarr_es.errors import AngzarrESError, ConfigError
from angzarr_es.subjects import domain_filter, events_filter, parse_subject

_json = msgspec.json.Encoder()


def subject_filter(text: str, prefix: str) -> str:
    """A domain name (`player`), `>` or `*` for every domain, or a subject filter as is.

    Raises:
        ConfigError: a filter outside `<prefix>.events.`.
    """
    if text in (">", "*"):
        return events_filter(prefix)
    if "." not in text and "*" not in text and ">" not in text:
        return domain_filter(prefix, text)
    head = f"{prefix}.events."
    if not text.startswith(head) and text != f"{prefix}.events.>":
        raise ConfigError(f"filter {text!r} is not under {head} (bus.nats.subject_prefix)")
    return text


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    import_protos(args.proto_module)
    if args.count < 0:
        raise ConfigError("--count must be >= 0")
    subject = subject_filter(args.filter, config.nats.subject_prefix)
    return asyncio.run(_run(args, config, subject))


class _Follow(CatchUp):
    """A catch-up reader from "new" that reports what it skips on stderr."""

    def _skipped(self, subject: str, stream_seq: int, exc: AngzarrESError) -> None:
        _skip_notice(subject, exc)


def _skip_notice(subject: str, exc: AngzarrESError) -> None:
    print(f"skipped a message on {subject}: {exc}", file=sys.stderr, flush=True)


def _banner(subject: str, url: str) -> None:
    # Notices go to stderr: stdout carries only events (JSON lines with --json).
    print(f"tailing {subject} on {url} (Ctrl-C to stop)", file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace, config: angzarr_es.Config, subject: str) -> int:
    printer = _Printer(args)
    async with await angzarr_es.connect(config=config) as client:
        url = client._wire.connected_url
        if config.nats.jetstream:
            async with _Follow(client._wire, config.nats, subject, "new") as sub:
                await sub.open()
                _banner(subject, url)
                async for d in sub:
                    if printer.show(d.domain, d.root, d.edition, d.events, d.headers):
                        return 0
            return 0
        prefix = config.nats.subject_prefix
        listener = await client._wire.listen(subject)
        try:
            _banner(subject, url)
            async for msg_subject, data, headers in listener:
                try:
                    domain, root = parse_subject(prefix, msg_subject)
                    book = codec.decode_book(data, subject=msg_subject)
                    events = codec.recorded(book, subject=msg_subject)
                except AngzarrESError as exc:
                    _skip_notice(msg_subject, exc)
                    continue
                if printer.show(domain, root, book.cover.edition.name, events, headers):
                    return 0
        finally:
            await listener.close()
    return 0


class _Printer:
    """Prints events, one line each; `show` is True once `--count` are out."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json = bool(args.json)
        self.count = int(args.count)
        self.seen = 0

    def show(
        self,
        domain: str,
        root: str,
        edition: str,
        events: list[codec.RecordedEvent],
        headers: Mapping[str, str],
    ) -> bool:
        trace = headers.get("traceparent", "")
        where = f"{domain}/{root}" + (f"@{edition}" if edition else "")
        for ev in events:
            if self.json:
                extra = {"traceparent": trace, "edition": edition}
                line = _json.encode(record(domain, root, ev, **extra)).decode()
            else:
                body = _json.encode(event_json(ev.event)).decode()
                line = f"{stamp(ev.created_at)}  {where}  #{ev.sequence}  {ev.type_name}  {body}"
            print(line, flush=True)
            self.seen += 1
            if self.count and self.seen >= self.count:
                return True
        return False
