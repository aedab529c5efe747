"""`angzarr-es show DOMAIN ID [--from N] [--to N] [--json]`: an aggregate's history."""

from __future__ import annotations

import argparse
import asyncio
from contextlib import aclosing

import msgspec

import angzarr_es
from angzarr_es._cli.common import (
    CommandError,
    add_decoding_options,
    import_protos,
    load_config,
    usage_error,
)
from angzarr_es._cli.events import event_json, record, stamp
from angzarr_es._cli.output import Output, printable, printable_json
from angzarr_es.subjects import domain_filter, validate_domain

_json = msgspec.json.Encoder()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_decoding_options(parser)
    parser.add_argument("domain", help="aggregate domain, e.g. player")
    parser.add_argument("id", help="aggregate id")
    parser.add_argument("--from", dest="from_seq", type=int, default=0, metavar="SEQ")
    parser.add_argument(
        "--to", dest="to_seq", type=int, default=None, metavar="SEQ", help="exclusive"
    )


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    import_protos(args.proto_module, config)
    if args.from_seq < 0 or (args.to_seq is not None and args.to_seq < args.from_seq):
        raise usage_error("--from must be >= 0 and --to (exclusive) >= --from")
    validate_domain(args.domain)
    return asyncio.run(_run(args, config))


async def _run(args: argparse.Namespace, config: angzarr_es.Config) -> int:
    async with await angzarr_es.connect(config=config) as client:
        store = client.store(args.domain)
        out = Output()
        if args.json:
            # Streamed a page at a time: fine for aggregates of any size.
            shown = 0
            async with aclosing(store.iter(args.id, args.from_seq, args.to_seq)) as events:
                async for ev in events:
                    print(printable_json(_json.encode(record(args.domain, args.id, ev)).decode()))
                    shown += 1
            if not shown:
                await _explain_empty(client, config, args, await store.next_sequence(args.id))
            return 0
        with out.busy(f"loading {printable(args.domain)}/{printable(args.id)}"):
            history = await store.load(args.id, args.from_seq, args.to_seq)
        if not history.events:
            await _explain_empty(client, config, args, history.next_sequence)
        out.line(
            f"{args.domain}/{args.id}: {len(history.events)} event(s) shown, "
            f"next sequence {history.next_sequence} ({store.subject(args.id)})"
        )
        out.table(
            "",
            ["seq", "created (UTC)", "type", "correlation", "event"],
            [
                [
                    str(ev.sequence),
                    stamp(ev.created_at),
                    ev.type_name,
                    ev.correlation_id or "-",
                    _json.encode(event_json(ev)).decode(),
                ]
                for ev in history.events
            ],
        )
        return 0


async def _explain_empty(
    client: angzarr_es.Client,
    config: angzarr_es.Config,
    args: argparse.Namespace,
    next_sequence: int,
) -> None:
    """Why nothing was shown, if that is an error: the domain or the aggregate
    has no events, or `--from` is past the aggregate's last event. (A range
    that only ends early, `--to` equal to `--from`, shows nothing and is fine.)

    Raises:
        CommandError: the domain has no events, the aggregate has none, or
            `--from` is past its end.
    """
    domain = args.domain
    subject = client.store(domain).subject(args.id)
    if next_sequence == 0:
        if not await client.has_events(domain):
            stream = client.store(domain).stream
            everything = domain_filter(config.nats.subject_prefix, domain)
            raise CommandError(
                f"unknown domain {domain!r}: no events under {everything} in {stream}"
            )
        raise CommandError(
            f"{domain} aggregate {subject.rpartition('.')[2]!r} has no events ({subject})"
        )
    if args.from_seq >= next_sequence:
        last = next_sequence - 1
        raise CommandError(
            f"--from {args.from_seq} is past the end of {domain} aggregate {args.id!r}: its "
            f"events are #0 to #{last}; give --from {last} or lower ({subject})"
        )
