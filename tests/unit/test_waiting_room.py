"""The waiting room's service: streams fed by the process's steps, the order call's check."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from flashorder.adapters.queue.memory import MemoryQueueStore
from flashorder.application.waiting_room import TicketView, WaitingRoom
from flashorder.domain import errors
from flashorder.domain.model import Product, ProductId, UserId
from flashorder.domain.queue import Ticket, TicketStatus
from flashorder.entrypoints.api.queue import with_heartbeat

START = datetime(2030, 1, 1, tzinfo=UTC)
SECRET = b"k" * 32


class CountingStore(MemoryQueueStore):
    """The memory store, counting the reads of single tickets."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def ticket(self, product_id: ProductId, ticket_id: str, *, now_ms: int) -> Ticket | None:
        self.reads += 1
        return await super().ticket(product_id, ticket_id, now_ms=now_ms)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at.timestamp()


def room(
    store: MemoryQueueStore,
    clock: Clock,
    *,
    stock: int = 100,
    queue_opens_at: datetime | None = None,
    sale_ends_at: datetime | None = None,
) -> tuple[WaitingRoom, Product]:
    sale = Product(
        ProductId("P"),
        "drop",
        100,
        stock,
        stock,
        sale_starts_at=START,
        sale_ends_at=sale_ends_at,
        queued=True,
        queue_opens_at=queue_opens_at,
    )
    other = Product(ProductId("Q"), "plain", 100, 5, 5)

    async def product_of(product_id: ProductId) -> Product | None:
        return {sale.product_id: sale, other.product_id: other}.get(product_id)

    async def available(product_id: ProductId) -> int:
        return stock

    return (
        WaitingRoom(
            store, product=product_of, available=available, secret=SECRET, window=2, clock=clock
        ),
        sale,
    )


async def test_fifty_streams_share_the_steps_and_read_their_ticket_only_when_reached() -> None:
    store, clock = CountingStore(), Clock(START - timedelta(seconds=1))
    waiting_room, sale = room(store, clock)
    views = [await waiting_room.join(sale.product_id, UserId(f"u{i}")) for i in range(50)]
    clock.at = START
    updates: dict[str, list[TicketView]] = {}

    async def follow(view: TicketView) -> None:
        ticket = view.ticket
        seen = updates.setdefault(ticket.ticket_id, [])
        async for update in waiting_room.follow(sale.product_id, ticket.ticket_id, viewer=None):
            seen.append(update)
            if update.ticket.status is TicketStatus.ADMITTED:
                return

    streams = [asyncio.create_task(follow(v)) for v, _ in views]
    await asyncio.sleep(0)
    store.reads = 0
    for _ in range(30):
        await waiting_room.step(sale.product_id)
        await asyncio.sleep(0)
        # Two turns at a time (the window): the two admitted order, the next two go in.
        admitted = [
            t
            for t, seen in updates.items()
            if seen and seen[-1].ticket.status is TicketStatus.ADMITTED
        ]
        for t in admitted:
            waiting_room.note_order([sale], UserId(updates[t][-1].ticket.user_id))
        if all(s.done() for s in streams):
            break
    await asyncio.wait_for(asyncio.gather(*streams), 5)

    assert all(seen[-1].ticket.status is TicketStatus.ADMITTED for seen in updates.values())
    # One step per tick for all fifty streams; a stream reads its ticket once the line
    # reaches it (about once each), not once per tick.
    assert waiting_room.steps <= 30
    assert store.reads <= 2 * 50
    # A new place alone is sent at most once a second: these steps took less, so each stream
    # sent its first view, perhaps one place, and its admission.
    assert max(len(seen) for seen in updates.values()) <= 3
    # Positions only go down.
    for seen in updates.values():
        aheads = [v.ticket.ahead for v in seen if v.ticket.ahead is not None]
        assert aheads == sorted(aheads, reverse=True)


async def test_the_order_check_needs_this_buyers_token_for_this_product() -> None:
    store, clock = MemoryQueueStore(), Clock(START - timedelta(seconds=1))
    waiting_room, sale = room(store, clock)
    (view, _) = await waiting_room.join(sale.product_id, UserId("alice"))
    clock.at = START
    await waiting_room.step(sale.product_id)
    admitted = await waiting_room.ticket(
        sale.product_id, view.ticket.ticket_id, viewer=UserId("alice")
    )
    token = admitted.admission_token
    assert token is not None
    plain = Product(ProductId("Q"), "plain", 100, 5, 5)

    waiting_room.check_order([sale, plain], UserId("alice"), token)
    waiting_room.check_order([plain], UserId("bob"), None)
    with pytest.raises(errors.AdmissionRequired):
        waiting_room.check_order([sale], UserId("alice"), None)
    with pytest.raises(errors.AdmissionTokenInvalid):
        waiting_room.check_order([sale], UserId("bob"), token)
    with pytest.raises(errors.AdmissionTokenInvalid):
        waiting_room.check_order([sale], UserId("alice"), token[:-2] + "xx")
    clock.at = START + timedelta(seconds=61)
    with pytest.raises(errors.AdmissionTokenExpired):
        waiting_room.check_order([sale], UserId("alice"), token)


async def test_the_queue_refuses_joins_before_it_opens_and_after_the_sale() -> None:
    store, clock = MemoryQueueStore(), Clock(START - timedelta(hours=2))
    waiting_room, sale = room(
        store,
        clock,
        queue_opens_at=START - timedelta(hours=1),
        sale_ends_at=START + timedelta(hours=1),
    )

    with pytest.raises(errors.QueueNotOpen) as early:
        await waiting_room.join(sale.product_id, UserId("u"))
    clock.at = START + timedelta(hours=2)
    with pytest.raises(errors.SaleEnded):
        await waiting_room.join(sale.product_id, UserId("u"))
    with pytest.raises(errors.NoQueue):
        await waiting_room.join(ProductId("Q"), UserId("u"))
    with pytest.raises(errors.ProductNotFound):
        await waiting_room.join(ProductId("nope"), UserId("u"))

    assert early.value.seconds_left == 3600


async def test_a_stream_closed_while_it_waits_for_a_step_ends_cleanly() -> None:
    store, clock = MemoryQueueStore(), Clock(START - timedelta(seconds=1))
    waiting_room, sale = room(store, clock)
    (view, _) = await waiting_room.join(sale.product_id, UserId("alice"))
    stream = with_heartbeat(
        waiting_room.follow(sale.product_id, view.ticket.ticket_id, viewer=None)
    )

    first = await anext(stream)

    async def next_view() -> TicketView | None:
        return await anext(stream)

    waiting = asyncio.create_task(next_view())
    await asyncio.sleep(0.01)
    # The client goes away while the stream waits for the next step (what Starlette does
    # to the body iterator of a closed connection): nothing may raise.
    waiting.cancel()
    (ended,) = await asyncio.gather(waiting, return_exceptions=True)
    await stream.aclose()

    assert first is not None
    assert first.ticket.status is TicketStatus.WAITING
    assert isinstance(ended, asyncio.CancelledError), ended
    assert waiting_room.watching(sale.product_id) == 0


async def test_closing_the_room_ends_its_streams() -> None:
    store, clock = MemoryQueueStore(), Clock(START - timedelta(seconds=1))
    waiting_room, sale = room(store, clock)
    (view, _) = await waiting_room.join(sale.product_id, UserId("alice"))
    stream = waiting_room.follow(sale.product_id, view.ticket.ticket_id, viewer=None)
    await anext(stream)

    async def rest() -> list[TicketView]:
        return [v async for v in stream]

    following = asyncio.create_task(rest())
    await asyncio.sleep(0.01)
    waiting_room.close()

    assert await asyncio.wait_for(following, 1) == []
