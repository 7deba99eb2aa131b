"""Fault drills on the full topology of ``make cluster``: three API hosts behind HAProxy,
Redis Cluster of three masters and three replicas, three Kafka brokers (RF 3,
``min.insync.replicas=2``). Buyers order without pause through the load balancer, a part
fails mid-sale, buyers retry with their keys until told, and the promises are proved:
no oversell, no lost or doubled order, one event per change, the read model equal to the
write model, the gate equal to the database after reconciliation.

``make cluster-drills`` (``pytest -m cluster_drill -s``); they build their own topology
(about two minutes on a busy 2-core machine) and take it down afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from tests.cluster.topology import (
    Shop,
    Topology,
    built,
    check_events_and_read_model,
    check_nothing_lost,
    reconcile_and_check,
    report,
)
from tests.support.crowd import Phases, burst_through, retry_until_definite

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.drill, pytest.mark.cluster_drill]

#: What a buyer may be told before the definite answer: never a 500 or a 4xx of another kind.
ALLOWED = {"201", "201 replayed", "409 sold-out", "503", "connection error", "timeout"}


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, mariadb_url: str) -> Iterator[Topology]:
    with built(tmp_path_factory.mktemp("cluster"), mariadb_url, reduced=False) as topology:
        yield topology


async def drill(
    shop: Shop, title: str, fault: Callable[[Phases], Awaitable[None]], *, after: float = 4
) -> None:
    products = [await shop.add_product(stock=400), await shop.add_product(stock=400)]
    attempts, phases = await burst_through(shop, products, fault, before=2, after=after)
    undecided = await retry_until_definite(shop, attempts, deadline=90)
    assert not undecided, f"no definite answer after 90s of retries: {undecided}"
    figures = report(title, attempts, phases)
    seen = {answer for a in attempts for answer in (a.first, a.answer)}
    assert seen <= ALLOWED, figures
    await check_nothing_lost(shop, attempts)
    stock = await reconcile_and_check(shop, products)
    print(f"   stock: {stock}")
    assert sum(s["sold"] for s in stock.values()) == sum(
        a.answer.startswith("201") for a in attempts
    )
    await check_events_and_read_model(shop)


async def test_a_redis_master_killed_mid_sale_is_replaced_by_its_replica(
    shop: Shop, topology: Topology
) -> None:
    pid = await shop.add_product(stock=1)
    master, replica = await topology.master_of(pid)

    async def kill(phases: Phases) -> None:
        phases.fault_at = time.monotonic()
        topology.script("redis-kill", str(master))
        await topology.promoted(replica)
        phases.back_at = time.monotonic()
        print(f"\n   replica :{replica} promoted {phases.back_at - phases.fault_at:.1f}s after")

    try:
        await drill(shop, f"Redis master :{master} killed", kill)
    finally:
        topology.script("redis-start", str(master))


async def test_a_kafka_broker_killed_and_brought_back_loses_and_doubles_no_event(
    shop: Shop, topology: Topology
) -> None:
    async def kill_and_restart(phases: Phases) -> None:
        phases.fault_at = time.monotonic()
        topology.script("broker-kill", "2")
        await asyncio.sleep(3)
        await asyncio.to_thread(topology.script, "broker-start", "2", timeout=300)
        phases.back_at = time.monotonic()

    await drill(shop, "Kafka broker 2 killed, restarted", kill_and_restart)


async def test_an_api_hosts_link_cut_and_restored_is_routed_around(
    shop: Shop, topology: Topology
) -> None:
    async def cut(phases: Phases) -> None:
        phases.fault_at = time.monotonic()
        topology.script("link-down", "1")
        await asyncio.sleep(5)
        topology.script("link-up", "1")
        phases.back_at = time.monotonic()

    await drill(shop, "API host 1's link down 5 s", cut, after=5)


async def test_a_whole_api_host_killed_is_routed_around(shop: Shop, topology: Topology) -> None:
    async def kill(phases: Phases) -> None:
        phases.fault_at = time.monotonic()
        topology.script("host-kill", "3")
        await asyncio.sleep(3)
        phases.back_at = time.monotonic()

    try:
        await drill(shop, "API host 3 killed", kill)
    finally:
        await asyncio.to_thread(topology.script, "host-start", "3", timeout=180)
