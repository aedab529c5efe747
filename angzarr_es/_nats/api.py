"""The JetStream API: every subject the project sends to, and each operation, once.

Subject templates are constants; `JetStream` sends each request through the
connection's mux, decodes the reply with the structs of `messages`, and turns
an API error into the error of `errors.api_error`.
"""

from __future__ import annotations

from typing import Any

from angzarr_es._nats import messages as m
from angzarr_es._nats.errors import (
    CONSUMER_NOT_FOUND,
    JETSTREAM_NOT_ENABLED_FOR_ACCOUNT,
    NO_MESSAGE_FOUND,
    STREAM_NOT_FOUND,
)
from angzarr_es._nats.mux import Mux

__all__ = ["API", "JetStream", "ack_metadata", "operation"]

API = "$JS.API."

ACCOUNT_INFO = "$JS.API.INFO"
STREAM_INFO = "$JS.API.STREAM.INFO.{stream}"
STREAM_CREATE = "$JS.API.STREAM.CREATE.{stream}"
STREAM_UPDATE = "$JS.API.STREAM.UPDATE.{stream}"
STREAM_DELETE = "$JS.API.STREAM.DELETE.{stream}"
STREAM_PURGE = "$JS.API.STREAM.PURGE.{stream}"
STREAM_NAMES = "$JS.API.STREAM.NAMES"
STREAM_LIST = "$JS.API.STREAM.LIST"
STREAM_MSG_GET = "$JS.API.STREAM.MSG.GET.{stream}"
DIRECT_GET = "$JS.API.DIRECT.GET.{stream}"
DIRECT_GET_LAST = "$JS.API.DIRECT.GET.{stream}.{subject}"
CONSUMER_CREATE = "$JS.API.CONSUMER.CREATE.{stream}.{consumer}"
CONSUMER_INFO = "$JS.API.CONSUMER.INFO.{stream}.{consumer}"
CONSUMER_DELETE = "$JS.API.CONSUMER.DELETE.{stream}.{consumer}"
CONSUMER_LIST = "$JS.API.CONSUMER.LIST.{stream}"
CONSUMER_UNPIN = "$JS.API.CONSUMER.UNPIN.{stream}.{consumer}"
CONSUMER_NEXT = "$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}"

# The operation names of the API subjects above and of those only the tests'
# own admin requests use, longest first: a subject's operation is its leading words.
_OPERATIONS = sorted(
    {
        template[len(API) :].partition("{")[0].rstrip(".")
        for template in (
            ACCOUNT_INFO,
            STREAM_INFO,
            STREAM_CREATE,
            STREAM_UPDATE,
            STREAM_DELETE,
            STREAM_PURGE,
            STREAM_NAMES,
            STREAM_LIST,
            STREAM_MSG_GET,
            DIRECT_GET,
            CONSUMER_CREATE,
            CONSUMER_INFO,
            CONSUMER_DELETE,
            CONSUMER_LIST,
            CONSUMER_UNPIN,
            CONSUMER_NEXT,
        )
    }
    | {"CONSUMER.DURABLE.CREATE", "CONSUMER.NAMES", "STREAM.MSG.DELETE"},
    key=lambda name: -name.count("."),
)


def operation(subject: str) -> str:
    """The JetStream API operation `subject` asks for ("STREAM.INFO",
    "DIRECT.GET", ...); "" for a subject outside the API."""
    if not subject.startswith(API):
        return ""
    rest = subject[len(API) :]
    for name in _OPERATIONS:
        if rest == name or rest.startswith(name + "."):
            return name
    return ".".join(rest.split(".")[:2])


def ack_metadata(reply: str) -> tuple[str, int, int, int, int, int]:
    """(consumer, delivered, stream seq, consumer seq, timestamp ns, pending)
    from a delivered message's `$JS.ACK...` reply subject."""
    tokens = reply.split(".")
    # v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>
    # v2: $JS.ACK.<domain>.<acchash>.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>.<rnd>
    base = 4 if len(tokens) == 9 else 6
    return (
        tokens[base - 1],
        int(tokens[base]),
        int(tokens[base + 1]),
        int(tokens[base + 2]),
        int(tokens[base + 3]),
        int(tokens[base + 4]),
    )


def _check(what: str, error: m.ApiError | None) -> None:
    if error is not None:
        raise error.as_error(what)


class JetStream:
    """JetStream API requests of one connection."""

    def __init__(self, mux: Mux) -> None:
        self._mux = mux

    async def call(
        self,
        subject: str,
        body: bytes = b"",
        *,
        what: str = "",
        timeout: float | None = None,
        repeatable: bool = False,
    ) -> bytes:
        """One API request; the raw JSON reply (`repeatable`: a read, sent
        again while unanswered).

        Raises:
            StoreTimeout, StoreUnavailable, StoreError
        """
        what = what or subject
        msg = await self._mux.request(
            subject, body, timeout=timeout, what=what, repeatable=repeatable
        )
        return msg.data

    # -- account and streams ---------------------------------------------------

    async def account_info(self) -> m.AccountInfo:
        """The account's JetStream usage and limits (its `error` set if JetStream is off)."""
        return m.account_info(await self.call(ACCOUNT_INFO, what="JetStream account info"))

    async def stream_info(self, name: str, *, what: str = "stream") -> m.StreamInfo | None:
        """A stream's info; None if it does not exist.

        Raises:
            StoreError: any other refusal (named `what`).
        """
        info = m.stream_info(await self.call(STREAM_INFO.format(stream=name), what=f"{what} info"))
        if info.error is not None and info.error.err_code == STREAM_NOT_FOUND:
            return None
        _check(f"{what} {name}", info.error)
        return info

    async def stream_settings(self, name: str, what: str = "stream") -> dict[str, Any] | None:
        """A stream's configuration as the server reports it; None if it does not exist."""
        info = await self.stream_info(name, what=what)
        return None if info is None else (info.config or {})

    async def stream_put(self, config: m.StreamConfig, *, create: bool, what: str = "") -> None:
        """Create (`create=True`) or update a stream to `config`."""
        template = STREAM_CREATE if create else STREAM_UPDATE
        verb = "create" if create else "update"
        name = what or f"stream {config.name}"
        reply = m.api_response(
            await self.call(template.format(stream=config.name), m.encode(config), what=name)
        )
        _check(f"{verb} {name}", reply.error)

    async def stream_delete(self, name: str) -> bool:
        """Delete a stream and everything in it; False if it did not exist."""
        reply = m.api_response(
            await self.call(STREAM_DELETE.format(stream=name), what=f"delete stream {name}")
        )
        if reply.error is not None and reply.error.err_code == STREAM_NOT_FOUND:
            return False
        _check(f"delete stream {name}", reply.error)
        return True

    async def stream_purge(self, stream: str, subjects_filter: str) -> int:
        """Purge the messages of `stream` matching `subjects_filter`; how many went."""
        body = m.encode(m.PurgeRequest(filter=subjects_filter))
        what = f"purge {subjects_filter}"
        reply = m.purge_response(
            await self.call(STREAM_PURGE.format(stream=stream), body, what=what)
        )
        _check(f"{what} from {stream}", reply.error)
        return reply.purged

    async def stream_names(self, subject: str) -> list[str]:
        """Names of the streams whose subjects overlap `subject` (first page).

        A reply saying JetStream is not enabled for the account is an empty list.
        """
        body = m.encode({"subject": subject})
        reply = m.stream_names(await self.call(STREAM_NAMES, body, what="stream names"))
        if reply.error is not None and reply.error.err_code == JETSTREAM_NOT_ENABLED_FOR_ACCOUNT:
            return []
        _check("stream names", reply.error)
        return reply.streams or []

    async def stream_list(self) -> list[m.StreamInfo]:
        """Every stream's info, all pages."""
        infos: list[m.StreamInfo] = []
        while True:  # the server answers in pages of 256
            body = m.encode(m.OffsetRequest(offset=len(infos)))
            listing = m.stream_list(await self.call(STREAM_LIST, body, what="list streams"))
            _check("list streams", listing.error)
            infos.extend(listing.streams or [])
            if not listing.streams or len(infos) >= listing.total:
                return infos

    async def subjects_page(
        self, stream: str, subjects_filter: str, offset: int, timeout: float
    ) -> m.StreamInfo:
        """One page of the stream's subjects matching `subjects_filter`, from `offset`."""
        body = m.encode(m.StreamInfoRequest(subjects_filter=subjects_filter, offset=offset))
        what = f"list {subjects_filter}"
        raw = await self.call(STREAM_INFO.format(stream=stream), body, what=what, timeout=timeout)
        reply = m.stream_info(raw)
        _check(what, reply.error)
        return reply

    async def msg_get(
        self, stream: str, request: m.MsgGetRequest, what: str = ""
    ) -> m.StoredMessage | None:
        """One STREAM.MSG.GET, answered by the stream leader (None: no such message)."""
        subject = request.last_by_subj or request.next_by_subj
        what = what or (f"read {subject}" if subject else f"read {stream} #{request.seq}")
        api = STREAM_MSG_GET.format(stream=stream)
        reply = m.msg_get(await self.call(api, m.encode(request), what=what, repeatable=True))
        if reply.error is not None:
            if reply.error.err_code == NO_MESSAGE_FOUND or reply.error.code == 404:
                return None
            _check(what, reply.error)
        return reply.message

    # -- consumers -------------------------------------------------------------------

    async def consumer_put(
        self, stream: str, config: m.ConsumerConfig, action: str = "create"
    ) -> m.DurableInfo:
        """Create (`action="create"`) or update (`"update"`) a consumer."""
        name = config.durable_name or config.name
        body = m.encode(m.ConsumerCreateRequest(stream_name=stream, config=config, action=action))
        subject = CONSUMER_CREATE.format(stream=stream, consumer=name)
        info = m.durable_info(await self.call(subject, body, what=f"{action} {name}"))
        _check(f"{action} consumer {name}", info.error)
        return info

    async def consumer_info(self, stream: str, name: str) -> m.DurableInfo | None:
        """The consumer's info, or None if it does not exist."""
        subject = CONSUMER_INFO.format(stream=stream, consumer=name)
        info = m.durable_info(await self.call(subject, what=f"consumer info {name}"))
        if info.error is not None and info.error.err_code == CONSUMER_NOT_FOUND:
            return None
        _check(f"consumer info {name}", info.error)
        return info

    async def consumer_delete(self, stream: str, name: str) -> bool:
        """Delete a consumer; False if it did not exist."""
        subject = CONSUMER_DELETE.format(stream=stream, consumer=name)
        reply = m.api_response(await self.call(subject, what=f"delete {name}"))
        if reply.error is not None and reply.error.err_code == CONSUMER_NOT_FOUND:
            return False
        _check(f"delete consumer {name}", reply.error)
        return True

    async def consumer_list(self, stream: str) -> list[m.DurableInfo]:
        """Every consumer of `stream`, all pages."""
        infos: list[m.DurableInfo] = []
        subject = CONSUMER_LIST.format(stream=stream)
        while True:  # pages of 256, like streams
            body = m.encode(m.OffsetRequest(offset=len(infos)))
            what = f"list consumers of {stream}"
            listing = m.consumer_list(await self.call(subject, body, what=what))
            _check(what, listing.error)
            infos.extend(listing.consumers or [])
            if not listing.consumers or len(infos) >= listing.total:
                return infos

    async def consumer_unpin(self, stream: str, name: str, group: str) -> None:
        """Release the pinned client of a priority group."""
        body = m.encode(m.UnpinRequest(group=group))
        subject = CONSUMER_UNPIN.format(stream=stream, consumer=name)
        reply = m.api_response(await self.call(subject, body, what="unpin"))
        _check(f"unpin {name}", reply.error)
