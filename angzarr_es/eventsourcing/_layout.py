"""Where a recorder's records live: subjects in the module's stream.

    <stream>.<app>.<purpose>.<originator>    one message per stored event
                                             (purpose "events", "snapshots", ...)
    <stream>.<app>.tracking.<upstream app>   one message per tracking record

`<app>` is the application's name in lower case ("stored" for none), as the
PostgreSQL module names its tables, so that the applications of a system can
share one stream and still have notification logs of their own. Every token
is the name itself when it is made of `[A-Za-z0-9_-]` (a UUID is), else `~`
and the base64url of its UTF-8 bytes (`angzarr_es.subjects.exact_token`), so
no id can reach another's subject; a text id in a UUID's form in capitals is
a different id from the same UUID in lower case, as in the library's other
modules.
"""

from __future__ import annotations

import uuid

from eventsourcing.persistence import DataError

from angzarr_es.errors import InvalidAggregateId
from angzarr_es.eventsourcing._settings import OriginatorIdType
from angzarr_es.subjects import exact_token

__all__ = ["Layout", "stream_subjects"]


def stream_subjects(stream: str) -> list[str]:
    """The subjects of the module's stream `stream`."""
    return [f"{stream}.>"]


def _token(name: str, what: str) -> str:
    try:
        return exact_token(name)
    except InvalidAggregateId as exc:
        raise DataError(f"{what} {name!r}: {exc}") from exc


class Layout:
    """The subjects of one recorder: one aggregate sequence per originator,
    and (for tracking) one tracking sequence per upstream application."""

    __slots__ = ("_events", "_tracking", "filter", "id_type")

    def __init__(self, stream: str, application: str, purpose: str, id_type: OriginatorIdType):
        app = _token(application.lower() or "stored", "application name")
        self._events = f"{stream}.{app}.{_token(purpose, 'purpose')}."
        self._tracking = f"{stream}.{app}.tracking."
        self.filter = self._events + "*"
        """Every stored event of this recorder (its notification log)."""
        self.id_type = id_type

    def subject(self, originator_id: uuid.UUID | str) -> str:
        """The subject of one originator's events.

        Raises:
            DataError: the id does not fit the ORIGINATOR_ID_TYPE, or is empty or too long.
        """
        return self._events + _token(self.id_text(originator_id), "originator id")

    def tracking(self, application_name: str) -> str:
        """The subject of the tracking records of an upstream application."""
        return self._tracking + _token(application_name, "application name")

    def id_text(self, originator_id: uuid.UUID | str) -> str:
        """The originator id as stored (a UUID in its canonical form).

        Raises:
            DataError: not a UUID in `uuid` mode.
        """
        if isinstance(originator_id, uuid.UUID):
            return str(originator_id)
        if self.id_type == "uuid":
            try:
                return str(uuid.UUID(originator_id))
            except (ValueError, TypeError, AttributeError) as exc:
                raise DataError(
                    f"originator id {originator_id!r} is not a UUID (ORIGINATOR_ID_TYPE=uuid)"
                ) from exc
        if not isinstance(originator_id, str):
            raise DataError(f"originator id must be a UUID or str, got {originator_id!r}")
        return originator_id

    def id_value(self, text: str) -> uuid.UUID | str:
        """The originator id as reads return it."""
        return uuid.UUID(text) if self.id_type == "uuid" else text
