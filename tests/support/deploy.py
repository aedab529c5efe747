"""Reading the files under deploy/ for the tests that check them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def deploy_json(name: str) -> dict[str, Any]:
    """A JSON file of deploy/nats/."""
    data: dict[str, Any] = json.loads((DEPLOY / "nats" / name).read_text())
    return data


def deploy_yaml(*parts: str) -> Any:
    """A YAML file under deploy/, by its path parts."""
    return yaml.safe_load(DEPLOY.joinpath(*parts).read_text())


def compose_services() -> dict[str, Any]:
    """The services of deploy/docker-compose.yml."""
    services: dict[str, Any] = deploy_yaml("docker-compose.yml")["services"]
    return services
