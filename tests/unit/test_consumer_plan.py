"""Planning a durable consumer (`_durables.plan_consumer`) from the wanted
configuration and the existing one as the server reports it."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from angzarr_es._durables import configured_consumer_config, plan_consumer
from angzarr_es.bus import ProjectorSettings
from angzarr_es.bus._settings import consumer_config
from angzarr_es.config import ConsumerSpec, NatsConfig

CFG = NatsConfig(stream_name="events", subject_prefix="app")
SPEC = ConsumerSpec(name="proj", filter="app.events.player.*", max_deliver=3, ack_wait=2.5)
WANTED = configured_consumer_config(SPEC)


def reported(**changes: Any) -> dict[str, Any]:
    """The wanted consumer as a server reports it: every field spelled out, its own extras."""
    config: dict[str, Any] = {
        **msgspec.structs.asdict(WANTED),
        "num_replicas": 0,
        "max_waiting": 512,
        "inactive_threshold": 0,
        "priority_policy": "none",
        "deliver_subject": None,
    }
    config.update(changes)
    return config


def test_a_missing_consumer_is_created() -> None:
    plan = plan_consumer(CFG, WANTED, None)
    assert (plan.action, plan.exists, plan.changes, plan.blocker) == ("create", False, {}, "")
    assert (plan.name, plan.filter, plan.max_deliver, plan.ack_wait) == (
        "proj",
        "app.events.player.*",
        3,
        2.5,
    )


def test_a_consumer_as_wanted_is_left_alone() -> None:
    plan = plan_consumer(CFG, WANTED, reported())
    assert (plan.action, plan.exists, plan.changes) == ("none", True, {})


def test_the_start_position_of_an_existing_consumer_is_not_a_change() -> None:
    current = reported(deliver_policy="by_start_sequence", opt_start_seq=42)
    assert plan_consumer(CFG, WANTED, current).action == "none"


@pytest.mark.parametrize(
    ("key", "have", "change"),
    [
        ("ack_wait", 30_000_000_000, "30000000000 -> 2500000000"),
        ("max_deliver", 5, "5 -> 3"),
        ("max_ack_pending", 10, "10 -> 1000"),
        ("description", "theirs", "'theirs' -> 'angzarr_es projector proj'"),
    ],
)
def test_updatable_settings_make_an_update(key: str, have: object, change: str) -> None:
    plan = plan_consumer(CFG, WANTED, reported(**{key: have}))
    assert (plan.action, plan.changes, plan.blocker) == ("update", {key: change}, "")


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"filter_subject": "app.events.hand.*"}, "filter_subject: 'app.events.hand.*'"),
        ({"ack_policy": "none"}, "ack_policy: 'none' (wanted 'explicit')"),
        ({"replay_policy": "original"}, "replay_policy"),
        ({"deliver_subject": "push.here"}, "deliver_subject: 'push.here' (wanted None)"),
        ({"priority_policy": "pinned_client"}, "priority_policy"),
        ({"filter_subjects": ["a.>", "b.>"]}, "filter_subjects: ['a.>', 'b.>']"),
    ],
)
def test_a_conflicting_definition_blocks_and_says_why(changes: dict[str, Any], named: str) -> None:
    plan = plan_consumer(CFG, WANTED, reported(ack_wait=1, **changes))
    assert plan.action == "blocked"
    assert plan.changes == {}  # nothing is changed when something conflicts
    assert named in plan.blocker
    assert plan.blocker.startswith("consumer proj on stream events exists with a conflicting")
    assert plan.blocker.endswith("Delete it (nats consumer rm) or choose another projector name.")


def test_a_blocker_names_the_filter_form_that_matches_the_existing_consumer() -> None:
    plan = plan_consumer(CFG, WANTED, reported(filter_subject="app.events.player.>"))
    assert "use filters.domain('player', deep=True)" in plan.blocker


def test_a_configured_consumer_is_planned_as_its_projector_makes_it() -> None:
    # The dry run plans [[bus.nats.consumers]] entries from the configuration;
    # Bus.provision makes them through a projector's settings: the same consumer.
    settings = ProjectorSettings(
        name=SPEC.name,
        subject=SPEC.filter,
        max_deliver=SPEC.max_deliver,
        ack_wait=SPEC.ack_wait,
        max_ack_pending=SPEC.max_ack_pending,
    )
    assert consumer_config(settings) == WANTED
