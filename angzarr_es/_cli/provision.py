"""`angzarr-es provision [--dry-run]`: create or update the event stream, the
snapshot and dead-letter streams, and the configured durable consumers."""

from __future__ import annotations

import argparse
import asyncio

import msgspec

import angzarr_es
from angzarr_es import ProvisionPlan, StreamPlan
from angzarr_es._cli.common import load_config
from angzarr_es.config import redact_url

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


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    return asyncio.run(_run(config, dry_run=args.dry_run))


async def _run(config: angzarr_es.Config, *, dry_run: bool) -> int:
    async with await angzarr_es.connect(config=config) as client:
        where = (
            f"on {redact_url(client.config.nats.servers[0])} (nats-server {client.server_version})"
        )
        if dry_run:
            plan = await client.plan_provision(bus=True)
            action = _DRY[plan.action]
            if plan.action == "blocked" and plan.current is None:
                action = "cannot be created"
            print(f"stream {plan.config.name} {where} {action}")
            _describe(plan)
            if plan.action == "blocked":
                print(f"blocked: {plan.blocker}")
                return 1
            return _side_plan(plan)
        plan = await client.provision()
        print(f"stream {plan.config.name} {where} {_DONE[plan.action]}")
        _changes(plan.events)
        n = client.config.nats
        print(f"snapshot stream {n.snapshot_stream} is in place")
        if n.jetstream:
            await client.bus.provision()
            print(f"dead-letter stream {n.dlq_stream} is in place")
            for spec in n.consumers:
                print(f"consumer {spec.name} ({spec.filter}) is in place")
        return 0


def _side_plan(plan: ProvisionPlan) -> int:
    """What provisioning would do to the snapshot and dead-letter streams and
    the configured consumers; 1 if a consumer cannot be brought to its definition."""
    blocked = 0
    for stream in plan.streams[1:]:
        name = f"{stream.role} {stream.config.name}"
        if stream.role == "dead-letter stream" and stream.action == "update":
            print(f"{name} exists; subject {stream.config.subjects[-1]} would be added")
        else:
            _say(name, stream.action, stream.changes)
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
        for key, change in stream.changes.items():
            print(f"  {key}: {change}")
