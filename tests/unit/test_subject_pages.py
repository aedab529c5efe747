"""Listing a stream's subjects page by page (`store/_discovery.py`), against
a fake index whose contents change between pages."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from angzarr_es.store import _discovery


class FakeIndex:
    """A server subject index whose contents change between pages."""

    def __init__(self, page_size: int, states: list[list[str]]) -> None:
        self.page_size = page_size
        self.states = states
        self.calls = 0

    timeout = 2.0

    @property
    def js(self) -> Any:
        return self

    async def subjects_page(
        self, stream: str, subjects_filter: str, offset: int, timeout: float
    ) -> Any:
        state = sorted(self.states[min(self.calls, len(self.states) - 1)])
        self.calls += 1
        page = state[offset : offset + self.page_size]
        return SimpleNamespace(
            total=len(state), state=SimpleNamespace(subjects=dict.fromkeys(page, 1))
        )


async def test_subjects_created_between_pages_are_not_listed_twice() -> None:
    before = [f"s.{c}" for c in "bdfhjl"]
    # After the first page (b, d, f), "a" and "c" appear before the window.
    after = sorted([*before, "s.a", "s.c"])
    index = FakeIndex(3, [before, after])
    pages = [p async for p in _discovery.subject_pages(index, "x", "s.*")]  # type: ignore[arg-type]
    listed = [s for p in pages for s in p]
    assert listed == before
    assert index.calls == 3
