"""The replies to one multi-reply request (a Direct Get batch, a pull),
collected as the inbox callback hands them over."""

from __future__ import annotations

import asyncio

from angzarr_es._nats import messages as m

__all__ = ["Collector", "feed"]


class Collector:
    """Replies to one multi-reply request, filled by the inbox callback."""

    __slots__ = (
        "deadline",
        "done",
        "expect",
        "last_seq",
        "pending",
        "replies",
        "size",
        "status",
        "subject",
        "what",
    )

    def __init__(
        self, expect: int, subject: str = "", what: str = "", deadline: float = 0.0
    ) -> None:
        self.subject = subject
        self.what = what
        self.deadline = deadline
        self.replies: list[tuple[bytes, str, str]] = []
        self.size = 0
        self.expect = expect
        self.last_seq = 0
        self.pending = 0
        self.status = ""
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


def feed(collector: Collector, data: bytes, reply: str, headers: dict[str, str] | None) -> None:
    """Add one reply to `collector`, completing it on a status or the expected count."""
    if collector.done.done():
        return
    status = headers.get(m.STATUS) if headers else None
    if status is None:
        seq = headers.get(m.H_SEQUENCE, "") if headers else ""
        collector.replies.append((data, reply, seq))
        collector.size += len(data)
        if len(collector.replies) == collector.expect:
            collector.done.set_result(None)
        return
    collector.status = status
    if headers is not None:
        collector.last_seq = int(headers.get(m.H_LAST_SEQ, "0") or 0)
        collector.pending = int(headers.get(m.H_NUM_PENDING, "0") or 0)
    collector.done.set_result(None)
