"""What the shared probe makes of STREAM.INFO replies (measured on a
three-server cluster: tests/faults/test_cluster.py, election and quorum loss)."""

from __future__ import annotations

import msgspec

from angzarr_es._nats import messages as m
from angzarr_es._nats.probe import diagnose


def info(raw: dict[str, object]) -> m.StreamInfo:
    return m.stream_info(msgspec.json.encode(raw))


def test_a_missing_stream_says_how_to_create_it() -> None:
    got = diagnose("s", info({"error": {"code": 404, "err_code": 10059, "description": "x"}}))
    assert got.err_code == 10059
    assert "stream s does not exist" in got.reason
    assert "provision" in got.reason


def test_no_meta_leader_is_no_quorum() -> None:
    got = diagnose("s", info({"error": {"code": 503, "err_code": 10008, "description": "x"}}))
    assert (got.err_code, got.reason.split(":")[0]) == (10008, "no quorum")


def test_a_leaderless_stream_without_a_majority_is_no_quorum() -> None:
    replicas = [{"name": "n1", "current": True}, {"name": "n2"}, {"name": "n3"}]
    got = diagnose("s", info({"cluster": {"leader": "", "replicas": replicas}}))
    assert got.reason.startswith("no quorum")
    assert "1 of its 3" in got.reason


def test_a_leaderless_stream_with_a_majority_is_electing() -> None:
    replicas = [{"name": "n1", "current": True}, {"name": "n2", "current": True}, {"name": "n3"}]
    got = diagnose("s", info({"cluster": {"leader": "", "replicas": replicas}}))
    assert "election" in got.reason
    assert "quorum" not in got.reason
    assert "does not exist" not in diagnose("s", info({"cluster": {"leader": "n2"}})).reason
