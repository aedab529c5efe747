"""The suite runs on the event loop ANGZARR_TEST_LOOP names (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import os


def _expected_module() -> str:
    return "uvloop" if os.environ.get("ANGZARR_TEST_LOOP") == "uvloop" else "asyncio"


async def test_async_tests_run_on_the_loop_asked_for() -> None:
    loop = asyncio.get_running_loop()
    assert type(loop).__module__.split(".")[0] == _expected_module()


def test_loops_made_by_tests_are_of_that_kind_too() -> None:
    loop = asyncio.new_event_loop()
    try:
        assert type(loop).__module__.split(".")[0] == _expected_module()
    finally:
        loop.close()
