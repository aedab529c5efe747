"""Discovery: which aggregates and domains exist, paged through the server's subject listing.

The server keeps an index of the stream's subjects; `STREAM.INFO` with a
`subjects_filter` and an `offset` answers one page of it, at most 100,000
subjects (nats-server's `JSMaxSubjectDetails`), sorted by subject when the
match is larger than one page. One aggregate is one subject, so a page is at
most 100,000 aggregates and the client holds one page at a time whatever the
number of aggregates.

Direct Get `multi_last` was measured as the alternative (docs/operations.md):
it answers at most 1024 subjects per filter and fails with `413 Too Many
Results` beyond that, and it sends every aggregate's last commit rather than
its name, so it cannot page through a large domain.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing

from angzarr_es._nats import Wire
from angzarr_es.errors import InvalidAggregateId
from angzarr_es.subjects import Subjects, parse_subject

__all__ = ["roots", "subject_pages"]

log = logging.getLogger("angzarr_es")

# The server sorts every matching subject for each page (O(n log n)), and a
# page is a few megabytes: allow more than a point request's timeout.
PAGE_TIMEOUT = 30.0


async def subject_pages(
    wire: Wire, stream: str, subjects_filter: str
) -> AsyncGenerator[list[str], None]:
    """Yield the stream's subjects matching `subjects_filter`, one sorted page at a time.

    Each subject is yielded at most once. Subjects created while the listing
    runs may or may not be included; every subject that exists throughout is.

    Raises:
        StoreUnavailable, StoreTimeout, StoreError
    """
    offset = 0
    last = ""
    while True:
        reply = await wire.js.subjects_page(
            stream, subjects_filter, offset, max(wire.timeout, PAGE_TIMEOUT)
        )
        found = reply.state.subjects
        if not found:
            return
        # One page of sorted subjects. Subjects created since the previous page
        # can shift the window back by a few: drop what was already yielded.
        page = sorted(found)
        total = reply.total
        del found, reply
        count = len(page)
        newest = page[-1]
        if page[0] <= last:
            page = [s for s in page if s > last]
        if page:
            yield page
        del page
        last = newest
        offset += count
        if offset >= total:
            return


async def roots(
    wire: Wire, stream: str, subjects: Subjects, domain: str, edition: str
) -> AsyncGenerator[str, None]:
    """Every aggregate id of `domain` on one timeline, in subject order, one
    page held at a time; a subject no store writes is skipped with a warning.

    Raises:
        StoreUnavailable, StoreTimeout, StoreError
    """
    pages = subject_pages(wire, stream, subjects.domain_aggregates(domain, edition))
    async with aclosing(pages):
        async for page in pages:
            for subject in page:
                try:
                    root = parse_subject(subjects.prefix, subject)[1]
                except InvalidAggregateId:
                    log.warning("list_roots: skipping %s, not an aggregate's subject", subject)
                    continue
                yield root
            del page  # before the next page arrives: hold one at a time
