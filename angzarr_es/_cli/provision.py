"""`angzarr-es provision [--dry-run] [--domain NAME ...]`: create or update the
event stream, the snapshot and dead-letter streams, and the configured
durable consumers. In per-domain layout (angzarr's): the correlation stream
first, then every domain stream that exists (adopted) and those of
`--domain` (created), each with what changed."""

from __future__ import annotations

import argparse
import asyncio

import msgspec

import angzarr_es
from angzarr_es import InvalidDomain, ProvisionPlan, StreamPlan
from angzarr_es._cli.common import load_config, usage_error
from angzarr_es.config import redact_url
from angzarr_es.subjects import validate_domain

_DRY = {
    "create": "would be created",
    "update": "would be updated",
    "none": "is up to date; nothing to do",
    "blocked": "cannot be changed in place",
}
_DONE = {"create": "created", "update": "updated", "none": "is up to date"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would change; change nothing"
    )
    parser.add_argument(
        "--domain",
        action="append",
        default=[],
        metavar="NAME",
        help='stream_layout = "per-domain": also create the stream of domain NAME '
        "(repeatable; existing domain streams are always adopted)",
    )


def run(args: argparse.Namespace) -> int:
    for domain in args.domain:  # a bad name is a usage error, before any connection
        try:
            validate_domain(domain)
        except InvalidDomain as exc:
            raise usage_error(f"--domain: {exc}") from None
    config = load_config(args)
    return asyncio.run(_run(config, dry_run=args.dry_run, domains=args.domain))


async def _run(config: angzarr_es.Config, *, dry_run: bool, domains: list[str]) -> int:
    async with await angzarr_es.connect(config=config) as client:
        where = (
            f"on {redact_url(client.config.nats.servers[0])} (nats-server {client.server_version})"
        )
        if dry_run:
            plan = await client.plan_provision(bus=True, domains=domains)
            action = _DRY[plan.action]
            if plan.action == "blocked" and plan.current is None:
                action = "cannot be created"
            print(f"{_label(plan.events)} {plan.config.name} {where} {action}")
            _describe(plan)
            if plan.action == "blocked":
                print(f"blocked: {plan.blocker}")
                return 1
            return _side_plan(plan)
        plan = await client.provision(domains=domains)
        print(f"{_label(plan.events)} {plan.config.name} {where} {_DONE[plan.action]}")
        _changes(plan.events)
        for stream in plan.domains:
            _domain_done(stream)
        n = client.config.nats
        print(f"snapshot stream {n.snapshot_stream} is in place")
        if n.jetstream:
            await client.bus.provision()
            print(f"dead-letter stream {n.dlq_stream} is in place")
            for spec in n.consumers:
                print(f"consumer {spec.name} ({spec.filter}) is in place")
        return 0


def _label(stream: StreamPlan) -> str:
    """How the plan's first stream is named: "stream" for the single layout's
    event stream, its role otherwise (the per-domain layout's correlation stream)."""
    return "stream" if stream.role == "event stream" else stream.role


def _domain_done(stream: StreamPlan) -> None:
    """What provisioning did to one domain stream (per-domain layout)."""
    name = f"domain stream {stream.config.name} (domain {stream.domain})"
    if stream.action == "kept":
        print(
            f"{name} is used as it is; the server refused the update: {stream.blocker}; "
            "reads without allow_direct go to its leader"
        )
        return
    if stream.action == "update":
        print(f"{name} adopted, updated in place (existing -> wanted):")
    else:
        print(f"{name} {_DONE[stream.action]}")
    _changes_only(stream)


def _side_plan(plan: ProvisionPlan) -> int:
    """What provisioning would do to the other streams (snapshots, dead
    letters, per-domain layout: the domain streams) and the configured
    consumers; 1 if one cannot be brought to its definition."""
    blocked = 0
    for stream in plan.streams[1:]:
        name = f"{stream.role} {stream.config.name}"
        if stream.role == "dead-letter stream" and stream.action == "update":
            print(f"{name} exists; subject {stream.config.subjects[-1]} would be added")
        else:
            _say(name, stream.action, stream.changes)
        if stream.action == "blocked":
            print(f"blocked: {stream.blocker}")
            blocked = 1
    for consumer in plan.consumers:
        name = (
            f"consumer {consumer.name} ({consumer.filter}, max_deliver {consumer.max_deliver}, "
            f"ack_wait {consumer.ack_wait}s)"
        )
        _say(name, consumer.action, consumer.changes)
        if consumer.action == "blocked":
            print(f"blocked: {consumer.blocker}")
            blocked = 1
    return blocked


def _say(name: str, action: str, changes: dict[str, str]) -> None:
    if action == "create":
        print(f"{name} would be created")
    elif action == "none":
        print(f"{name} exists and is up to date")
    elif action == "update":
        print(f"{name} exists and would be updated (existing -> wanted):")
        for key, change in changes.items():
            print(f"  {key}: {change}")
    else:
        print(f"{name} cannot be changed in place")


def _describe(plan: ProvisionPlan) -> None:
    print("configuration (JSON for `nats stream add --config`):")
    print(msgspec.json.format(msgspec.json.encode(plan.config), indent=2).decode())
    _changes(plan.events)


def _changes(stream: StreamPlan) -> None:
    if stream.changes:
        print("differences from the existing stream (existing -> wanted):")
        _changes_only(stream)


def _changes_only(stream: StreamPlan) -> None:
    for key, change in stream.changes.items():
        print(f"  {key}: {change}")
