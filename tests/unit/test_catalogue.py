from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from flashorder.application.catalogue import CatalogueCache
from flashorder.application.handlers import Deps, refuse_off_sale
from flashorder.domain import errors
from flashorder.domain.model import Product, ProductId


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Loader:
    """A typed fake of the database read, counting what it was asked for."""

    def __init__(self, products: dict[ProductId, Product]) -> None:
        self.products = products
        self.asked: list[list[ProductId]] = []

    async def __call__(self, ids: Sequence[ProductId]) -> dict[ProductId, Product]:
        self.asked.append(list(ids))
        return {pid: self.products[pid] for pid in ids if pid in self.products}


def product(pid: str, price: int = 100) -> Product:
    return Product(ProductId(pid), "x", price, stock=1, available=1)


async def test_a_known_product_is_read_once_within_the_ttl() -> None:
    clock = Clock()
    cache = CatalogueCache(ttl=5, clock=clock)
    load = Loader({ProductId("a"): product("a")})
    for _ in range(3):
        assert set(await cache.products([ProductId("a")], load)) == {"a"}
    assert load.asked == [["a"]]


async def test_an_unknown_product_is_looked_up_again_so_a_new_one_is_found_at_once() -> None:
    cache = CatalogueCache(ttl=5, clock=Clock())
    load = Loader({})
    assert await cache.products([ProductId("new")], load) == {}
    load.products[ProductId("new")] = product("new")
    assert set(await cache.products([ProductId("new")], load)) == {"new"}


async def test_a_price_changed_by_hand_is_seen_after_the_ttl() -> None:
    clock = Clock()
    cache = CatalogueCache(ttl=5, clock=clock)
    load = Loader({ProductId("a"): product("a", 100)})
    await cache.products([ProductId("a")], load)
    load.products[ProductId("a")] = product("a", 200)
    assert (await cache.products([ProductId("a")], load))[ProductId("a")].price == 100
    clock.now = 6
    assert (await cache.products([ProductId("a")], load))[ProductId("a")].price == 200


async def test_only_the_missing_products_are_loaded() -> None:
    cache = CatalogueCache(ttl=5, clock=Clock())
    load = Loader({ProductId("a"): product("a"), ProductId("b"): product("b")})
    await cache.products([ProductId("a")], load)
    await cache.products([ProductId("a"), ProductId("b")], load)
    assert load.asked == [["a"], ["b"]]


async def test_the_crowd_before_the_start_is_refused_with_one_load_per_time_to_live() -> None:
    starts = datetime.now(UTC) + timedelta(minutes=1)
    loads = 0

    class Products:
        async def get_many(self, ids: Sequence[ProductId]) -> dict[ProductId, Product]:
            nonlocal loads
            loads += 1
            return {ProductId("p"): Product(ProductId("p"), "x", 1, 1, 1, sale_starts_at=starts)}

    class Work:
        products = Products()

        async def __aenter__(self) -> Work:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

    deps = Deps(uow=Work, stock=None, locks=None, idempotency=None, placement=None)  # type: ignore[arg-type]
    for _ in range(1000):
        with pytest.raises(errors.SaleNotStarted):
            await refuse_off_sale([ProductId("p")], deps=deps, keyed=False)
    assert loads == 1
