"""`angzarr-es provision [--dry-run]`: create or update the event stream, the
snapshot and dead-letter streams, and the configured durable consumers."""

from __future__ import annotations

import argparse
import asyncio

import msgspec

import angzarr_es
from angzarr_es._cli.common import load_config
from angzarr_es._nats import messages as js
from angzarr_es.client import ProvisionPlan, _differences
from angzarr_es.config import redact_url
from angzarr_es.store import _snapshots

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
            plan = await client.plan_provision()
            print(f"stream {plan.config.name} {where} {_DRY[plan.action]}")
            _describe(plan)
            if plan.action == "blocked":
                print(f"blocked: {plan.blocker}")
                return 1
            await _side_plan(client)
            return 0
        plan = await client.provision()
        print(f"stream {plan.config.name} {where} {_DONE[plan.action]}")
        _changes(plan)
        n = client.config.nats
        print(f"snapshot stream {n.snapshot_stream} is in place")
        if n.jetstream:
            await client.bus.provision()
            print(f"dead-letter stream {n.dlq_stream} is in place")
            for spec in n.consumers:
                print(f"consumer {spec.name} ({spec.filter}) is in place")
        return 0


async def _side_plan(client: angzarr_es.Client) -> None:
    """What provisioning would do to the snapshot and dead-letter streams, as
    their STREAM.INFO shows (the checks `provision` makes before changing them)."""
    n = client.config.nats
    snapshots = _snapshots.stream_config(n)
    current = await client.stream_settings(snapshots.name, what="snapshot stream")
    if current is None:
        print(f"snapshot stream {snapshots.name} would be created")
    elif changes := _differences(snapshots, current):
        print(f"snapshot stream {snapshots.name} exists and would be updated (existing -> wanted):")
        for key, change in changes.items():
            print(f"  {key}: {change}")
    else:
        print(f"snapshot stream {snapshots.name} exists and is up to date")
    if n.jetstream:
        subject = f"{n.subject_prefix}.dlq.>"
        current = await client.stream_settings(n.dlq_stream, what="dead-letter stream")
        if current is None:
            print(f"dead-letter stream {n.dlq_stream} would be created")
        elif subject in current.get("subjects", []):
            print(f"dead-letter stream {n.dlq_stream} exists and is up to date")
        else:
            print(f"dead-letter stream {n.dlq_stream} exists; subject {subject} would be added")
        for spec in n.consumers:
            print(
                f"consumer {spec.name} ({spec.filter}, max_deliver {spec.max_deliver}, "
                f"ack_wait {spec.ack_wait}s) would be created or checked"
            )


def _describe(plan: ProvisionPlan) -> None:
    print("configuration (JSON for `nats stream add --config`):")
    print(msgspec.json.format(js.encode(plan.config), indent=2).decode())
    _changes(plan)


def _changes(plan: ProvisionPlan) -> None:
    if plan.changes:
        print("differences from the existing stream (existing -> wanted):")
        for key, change in plan.changes.items():
            print(f"  {key}: {change}")
