"""The order route's deadline: past it the command is cancelled and the caller gets a 503."""

from __future__ import annotations

import asyncio

import pytest

from flashorder.domain import errors
from flashorder.entrypoints.api.orders import deadline


async def test_a_command_past_its_deadline_is_cancelled_and_unavailable() -> None:
    cancelled = False

    async def slow() -> None:
        nonlocal cancelled
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled = True
            raise

    with pytest.raises(errors.Unavailable) as raised:
        async with deadline(0.05):
            await slow()
    assert cancelled
    assert raised.value.public
    assert "no answer within 0.05s" in str(raised.value)


async def test_within_its_deadline_a_command_answers_or_raises_its_own_error() -> None:
    async with deadline(5):
        await asyncio.sleep(0)
    with pytest.raises(errors.SoldOut):
        async with deadline(5):
            raise errors.SoldOut("p-1")
    # The timer is gone with the block: a later wait is not cut.
    async with deadline(0.05):
        pass
    await asyncio.sleep(0.1)
