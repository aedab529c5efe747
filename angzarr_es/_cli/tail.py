"""`angzarr-es tail FILTER [--count N] [--json]`: live events on a subject filter.

A core NATS subscription: it sees commits as they are published, not the
stream's past (use `show` for history). Events go to stdout; the banner and
notices about messages that cannot be shown go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import msgspec

import angzarr_es
from angzarr_es import codec
from angzarr_es._cli.common import import_protos, load_config
from angzarr_es._cli.events import event_json, record, stamp
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


async def _run(args: argparse.Namespace, config: angzarr_es.Config, subject: str) -> int:
    prefix = config.nats.subject_prefix
    seen = 0
    async with await angzarr_es.connect(config=config) as client:
        listener = await client._wire.listen(subject)
        try:
            # Notices go to stderr: stdout carries only events (JSON lines with --json).
            print(
                f"tailing {subject} on {client._wire.connected_url} (Ctrl-C to stop)",
                file=sys.stderr,
                flush=True,
            )
            async for msg_subject, data, headers in listener:
                try:
                    domain, root = parse_subject(prefix, msg_subject)
                    book = codec.decode_book(data, subject=msg_subject)
                    events = codec.recorded(book, subject=msg_subject)
                except AngzarrESError as exc:
                    print(f"skipped a message on {msg_subject}: {exc}", file=sys.stderr, flush=True)
                    continue
                trace = headers.get("traceparent", "")
                edition = book.cover.edition.name  # "" on the main timeline
                where = f"{domain}/{root}" + (f"@{edition}" if edition else "")
                for ev in events:
                    if args.json:
                        extra = {"traceparent": trace, "edition": edition}
                        line = _json.encode(record(domain, root, ev, **extra)).decode()
                    else:
                        body = _json.encode(event_json(ev.event)).decode()
                        line = f"{stamp(ev.created_at)}  {where}  #{ev.sequence}  {ev.type_name}  {body}"
                    print(line, flush=True)
                    seen += 1
                    if args.count and seen >= args.count:
                        return 0
        finally:
            await listener.close()
    return 0
