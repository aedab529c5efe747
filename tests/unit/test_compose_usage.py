"""The usage comment of deploy/docker-compose.yml starts what it says it starts."""

from __future__ import annotations

import re

from tests.support.deploy import DEPLOY, compose_services


def test_the_cluster_command_in_the_comment_starts_the_three_cluster_servers() -> None:
    text = (DEPLOY / "docker-compose.yml").read_text()
    (command,) = re.findall(r"^#\s+docker compose .*--profile cluster up -d(.*)$", text, re.M)
    named = command.partition("#")[0].split()
    cluster = [n for n, s in compose_services().items() if "cluster" in s.get("profiles", [])]
    # `up -d` with no service names would start every service of the active
    # profiles and those with no profile: the single server too.
    assert sorted(named) == sorted(cluster) == ["nats-1", "nats-2", "nats-3"]
