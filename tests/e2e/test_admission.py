"""Admission: rate limits per user and per client address, and the size limits of a request."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flashorder.application.placement import ReservePlacement
from tests.support.api import Api, embedded
from tests.support.calls import admin, new_product, order_body, place, post_order, product, rid

PROBLEM = "urn:flashorder:problem:"


def assert_too_many(reply_status: int, body: dict[str, object], retry_after: str) -> None:
    assert reply_status == 429, body
    assert body["type"] == PROBLEM + "too-many-requests"
    assert retry_after.isdigit()
    assert int(retry_after) >= 1


async def test_past_the_per_user_limit_orders_get_429_with_retry_after_and_write_nothing(
    tmp_path: Path,
) -> None:
    async with embedded(tmp_path, rate_user_per_second=0.1, rate_user_burst=2) as api:
        pid = await new_product(api, stock=10)
        user = rid("u")
        first = await place(api, user, (pid, 1, 10050))
        assert first.status == 201
        assert (await place(api, user, (pid, 1, 10050))).status == 201

        refused = await place(api, user, (pid, 1, 10050), key=rid("key"))
        assert_too_many(refused.status, refused.body, refused.headers["retry-after"])
        assert int(refused.headers["retry-after"]) == 10  # one token at 0.1/s
        cancel = await api.call(
            "POST", f"/api/v1/orders/{first.body['orderId']}/cancel", token=api.token(user)
        )
        assert_too_many(cancel.status, cancel.body, cancel.headers["retry-after"])

        assert (await product(api, pid))["sold"] == 2
        assert (await place(api, rid("u"), (pid, 1, 10050))).status == 201


async def test_every_order_is_admitted_before_any_work_even_one_of_a_sold_out_product(
    tmp_path: Path,
) -> None:
    async with embedded(tmp_path, rate_user_per_second=0.1, rate_user_burst=2) as api:
        gone = await new_product(api, stock=1)
        assert (await place(api, rid("u"), (gone, 1, 10050))).status == 201
        await asyncio.sleep(0.15)  # past the sold-out cache's reading taken before that sale
        user = rid("u")

        refusals = [(await place(api, user, (gone, 1, 10050))).status for _ in range(6)]

        # Each order takes a token first: past the burst, not even the sold-out check runs.
        assert refusals == [409, 409, 429, 429, 429, 429]


async def test_a_flood_of_made_up_product_ids_is_admitted_before_it_costs_a_reading(
    tmp_path: Path,
) -> None:
    async with embedded(tmp_path, rate_user_per_second=1, rate_user_burst=20) as api:
        placement = api.service.deps.placement
        assert isinstance(placement, ReservePlacement)
        sold_out = placement.sold_out
        assert sold_out is not None
        user = rid("u")

        statuses = Counter(
            [
                (await place(api, user, (f"PRD_240701120000001_{n:04d}_101", 1, 10050))).status
                for n in range(300)
            ]
        )

        # Only the admitted few were looked up; the rest cost a token check and nothing else.
        assert statuses[429] >= 270, statuses
        assert statuses[422] + statuses[429] == 300, statuses
        assert len(sold_out) <= 25


async def test_past_the_per_address_limit_every_user_gets_429(tmp_path: Path) -> None:
    async with embedded(tmp_path, rate_ip_per_second=0.5, rate_ip_burst=3) as api:
        pid = await new_product(api, stock=10)
        statuses = [(await place(api, rid("u"), (pid, 1, 10050))).status for _ in range(3)]
        refused = await place(api, rid("u"), (pid, 1, 10050))

        assert statuses == [201, 201, 201]
        assert_too_many(refused.status, refused.body, refused.headers["retry-after"])
        assert (await product(api, pid))["sold"] == 3


async def test_a_rate_of_zero_turns_a_limit_off(tmp_path: Path) -> None:
    async with embedded(
        tmp_path, rate_user_per_second=0, rate_user_burst=1, rate_ip_per_second=0
    ) as api:
        pid = await new_product(api, stock=10)
        user = rid("u")
        statuses = {(await place(api, user, (pid, 1, 10050))).status for _ in range(5)}

        assert statuses == {201}


async def test_reads_are_not_rate_limited(tmp_path: Path) -> None:
    async with embedded(tmp_path, rate_user_per_second=0.1, rate_user_burst=1) as api:
        pid = await new_product(api, stock=10)
        user = rid("u")
        assert (await place(api, user, (pid, 1, 10050))).status == 201
        for _ in range(5):
            reply = await api.call("GET", f"/api/v1/orders?userId={user}", token=api.token(user))
            assert reply.status == 200


async def test_a_quantity_over_the_per_item_maximum_is_a_422(api: Api) -> None:
    pid = await new_product(api, stock=5000)
    reply = await post_order(api, order_body(rid("u"), (pid, 1001, 10050)))

    assert reply.status == 422
    assert reply.body["type"] == PROBLEM + "invalid-request"
    assert (await product(api, pid))["available"] == 5000


async def test_an_order_of_exactly_the_maximum_item_count_is_taken(api: Api) -> None:
    pids = [await new_product(api, stock=5) for _ in range(50)]
    reply = await place(api, rid("u"), *[(pid, 1, 10050) for pid in pids])

    assert reply.status == 201, reply.body
    assert len(reply.body["items"]) == 50


async def test_a_streamed_body_without_a_length_is_cut_off_at_the_limit(tmp_path: Path) -> None:
    async with embedded(tmp_path) as api:
        pid = await new_product(api, stock=5)

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"userId": "'
            for _ in range(100):
                yield b"x" * 1024
            yield b'"}'

        response = await api.client.post(
            "/api/v1/orders",
            content=chunks(),
            headers={
                "content-type": "application/json",
                "Authorization": f"Bearer {api.token('u1')}",
            },
        )
        assert "content-length" not in response.request.headers
        assert response.status_code == 413
        assert response.json()["type"] == PROBLEM + "payload-too-large"
        assert (await product(api, pid))["available"] == 5


async def test_the_crowd_before_a_known_products_start_spends_no_rate_limit_token(
    tmp_path: Path,
) -> None:
    async with embedded(tmp_path, rate_user_per_second=0.1, rate_user_burst=2) as api:
        starts = datetime.now(UTC) + timedelta(minutes=5)
        pid = rid("PRD")
        body = {
            "productId": pid,
            "name": "drop",
            "price": 10050,
            "stock": 5,
            "saleStartsAt": starts.isoformat(),
        }
        assert (await api.call("POST", "/api/v1/products", body, token=admin(api))).status == 201
        user = rid("u")
        # The first order loads the product (admitted: it takes one token); every later one
        # is refused from the process's catalogue cache before admission.
        refusals = Counter([(await place(api, user, (pid, 1, 10050))).status for _ in range(10)])
        assert refusals == Counter({409: 10})

        # The buyer's bucket is untouched by them: two tokens of burst, one spent, one left.
        other = await new_product(api, stock=5)
        assert (await place(api, user, (other, 1, 10050))).status == 201
        assert (await place(api, user, (other, 1, 10050))).status == 429

        # A product id never seen still pays admission before it costs a read.
        unknown = [(await place(api, user, (rid("PRD"), 1, 10050))).status for _ in range(2)]
        assert unknown == [429, 429]
