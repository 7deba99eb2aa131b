"""Buyers for the topology of the module (its ``topology`` fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.cluster.topology import Shop, Topology, shop_of


@pytest.fixture
async def shop(topology: Topology) -> AsyncIterator[Shop]:
    async with shop_of(topology) as opened:
        yield opened
