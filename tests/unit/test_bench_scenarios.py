"""The bench's scenarios: deterministic, shaped as the issue asks."""

from __future__ import annotations

import orjson
import pytest

from flashorder_bench.options import BenchOptions, parse_scenario, parse_strategies
from flashorder_bench.samples import ECHO, GET_ORDER, GET_PRODUCT, ORDER
from flashorder_bench.scenarios import ECHO_PATH, ScenarioSpec, jobs, products


def _spec(name: str = "hot", **changes: object) -> ScenarioSpec:
    base: dict[str, object] = {
        "name": name,
        "tag": "t1",
        "requests": 1000,
        "stock": 100,
        "users": 300,
        "max_per_user": 4,
        "products": 20,
        "seed": 7,
    }
    base.update(changes)
    return ScenarioSpec(**base)  # type: ignore[arg-type]


def test_the_same_spec_makes_the_same_jobs() -> None:
    assert jobs(_spec()) == jobs(_spec())
    assert jobs(_spec()) != jobs(_spec(seed=8))


def test_hot_is_one_product_bought_once_or_twice_by_many_users() -> None:
    spec = _spec()
    (product,) = products(spec)
    assert (product.stock, product.max_per_user) == (100, 4)
    made = jobs(spec)
    assert len(made) == 1000
    calls = [job.calls[0] for job in made]
    assert {c.product_id for c in calls} == {product.product_id}
    assert {c.quantity for c in calls} == {1, 2}
    assert len({c.user_id for c in calls}) > 200
    assert all(c.kind == ORDER and c.idempotency_key is None for c in calls)


def test_order_bodies_are_priced_as_the_server_prices_them() -> None:
    call = jobs(_spec())[0].calls[0]
    assert call.body is not None
    body = orjson.loads(call.body)
    assert body["paymentAmount"] == call.quantity * body["items"][0]["productPrice"]
    assert body["userId"] == call.user_id


def test_retry_sends_each_order_twice_under_one_key() -> None:
    made = jobs(_spec("retry"))
    assert all(len(job.calls) == 2 and job.calls[0] == job.calls[1] for job in made)
    assert len({job.calls[0].idempotency_key for job in made}) == len(made)
    assert {job.concurrent for job in made} == {True, False}


def test_many_spreads_orders_over_products_with_ample_stock() -> None:
    spec = _spec("many")
    seeds = products(spec)
    assert len(seeds) == 20
    assert all(s.stock >= 2 * spec.requests and s.max_per_user is None for s in seeds)
    assert len({job.calls[0].product_id for job in jobs(spec)}) == 20


def test_mixed_is_mostly_reads_of_products_and_known_orders() -> None:
    made = jobs(_spec("mixed", orders=(("o-1", "u-1"), ("o-2", "u-2"))))
    kinds = [job.calls[0].kind for job in made]
    assert 0.15 < kinds.count(ORDER) / len(kinds) < 0.25
    assert kinds.count(GET_PRODUCT) > 0
    assert kinds.count(GET_ORDER) > 0
    reads = {(j.calls[0].path, j.calls[0].user_id) for j in made if j.calls[0].kind == GET_ORDER}
    # Each order is read by its buyer: to anyone else it does not exist.
    assert reads == {("/api/v1/orders/o-1", "u-1"), ("/api/v1/orders/o-2", "u-2")}


def test_echo_sends_the_same_bodies_to_the_echo_route() -> None:
    real, echo = jobs(_spec()), jobs(_spec(echo=True))
    assert [j.calls[0].body for j in real] == [j.calls[0].body for j in echo]
    assert {j.calls[0].path for j in echo} == {ECHO_PATH}
    assert {j.calls[0].kind for j in echo} == {ECHO}


def test_issue_defaults_and_scaled_down_flags() -> None:
    spec = BenchOptions().spec("x")
    assert (spec.requests, spec.stock, spec.users, spec.max_per_user) == (50_000, 5_000, 20_000, 4)
    small = BenchOptions(requests=200, stock=20, users=50).spec("x")
    assert (small.requests, small.stock, small.users) == (200, 20, 50)
    # Fewer requests and no stock given: the stock keeps its share, a tenth.
    assert BenchOptions(requests=3_000).spec("x").stock == 300


def test_an_open_loop_step_keeps_the_share_of_stock_to_requests() -> None:
    step = BenchOptions().spec("o0", requests=5_000)
    assert (step.requests, step.stock) == (5_000, 500)


def test_the_warm_up_sells_its_own_products_to_its_own_buyers() -> None:
    opts = BenchOptions()
    warmup = opts.warmup_spec("w")
    measured = opts.spec("r")
    assert warmup is not None
    assert warmup.requests == 2_000
    assert warmup.stock == 4_000  # every request can be served: the selling path warms up
    assert not {s.product_id for s in products(warmup)} & {s.product_id for s in products(measured)}
    assert not {c.user_id for j in jobs(warmup) for c in j.calls} & {
        c.user_id for j in jobs(measured) for c in j.calls
    }
    small = BenchOptions(requests=120).warmup_spec("w")
    assert small is not None
    assert small.requests == 12
    assert BenchOptions(warmup=0).warmup_spec("w") is None


def test_options_parse_scenarios_and_strategies() -> None:
    assert parse_scenario("retry") == "retry"
    assert parse_strategies("lock, reserve,lock") == ("lock", "reserve")
    with pytest.raises(ValueError, match="unknown scenario"):
        parse_scenario("cold")
    with pytest.raises(ValueError, match="unknown strategy"):
        parse_strategies("reserve,optimistic")
