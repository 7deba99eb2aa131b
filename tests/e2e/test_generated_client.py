"""The API as a consuming team uses it: through a client generated from its description.

The description is fetched from the running service (``flashorder serve``), checked by
``openapi-spec-validator``, compared with the committed docs/openapi.json, and fed to
``openapi-python-client`` (pinned in tools/openapi-python-client, run with ``uvx``), which must
not warn. The whole flow then goes through the generated client only, with
``raise_on_unexpected_status``: an answer the description does not declare fails the test,
and every problem must parse into the typed ``Problem``.

Not provoked here: ``duplicate-in-flight`` (a race: tests/e2e/test_races.py) and
``unavailable`` (a dependency down: the fault drills).
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from openapi_spec_validator import validate

from tests.support.served import Served

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "openapi.json"
TOOL = ROOT / "tools" / "openapi-python-client"
GENERATOR = (TOOL / "requirements.in").read_text().strip()
PACKAGE = "flashorder_client"
#: The original's example product and order, as written.
PRODUCT = "PRD_240701120000001_0001_101"
BUYER = "test1234"


def fetch_description(served: Served) -> dict[str, Any]:
    with urllib.request.urlopen(f"{served.base}/openapi.json", timeout=10) as answer:
        document: dict[str, Any] = json.load(answer)
    return document


def test_the_served_description_is_valid_openapi(served: Served) -> None:
    validate(fetch_description(served))


def test_the_committed_description_is_what_the_service_serves(served: Served) -> None:
    committed = json.loads(COMMITTED.read_text())

    assert committed == fetch_description(served), (
        "docs/openapi.json differs from what the service serves: run `make openapi`, review "
        "the diff, and add a changelog entry (CHANGELOG.md) for what a client would notice"
    )


def _uvx() -> str:
    found = shutil.which("uvx") or str(Path.home() / ".local" / "bin" / "uvx")
    assert Path(found).exists(), "uvx not found: `make install` installs uv"
    return found


@pytest.fixture(scope="module")
def client(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The package that openapi-python-client generates from the served description."""
    work = tmp_path_factory.mktemp("client")
    spec = work / "openapi.json"
    spec.write_text(json.dumps(fetch_description(served)))
    run = subprocess.run(
        [
            _uvx(),
            "--constraints",
            str(TOOL / "constraints.txt"),
            GENERATOR,
            "generate",
            "--path",
            str(spec),
            "--meta",
            "none",
            "--output-path",
            str(work / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=work,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    # Any warning is a response or model the generated client would drop or misread.
    assert "warning" not in output.lower(), output
    sys.path.insert(0, str(work))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(work))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


class Generated:
    """Shorthands for the generated package's modules; every call goes through them."""

    def __init__(self, package: ModuleType, served: Served) -> None:
        self.package = package
        self.served = served
        self.models = importlib.import_module(f"{PACKAGE}.models")
        self.opened: list[Any] = []

    def api(self, name: str) -> Any:
        for tag in ("orders", "catalogue", "operations"):
            try:
                return importlib.import_module(f"{PACKAGE}.api.{tag}.{name}")
            except ModuleNotFoundError:
                continue
        raise AssertionError(f"no operation module {name}")

    def as_user(self, user: str, *, admin: bool = False) -> Any:
        return self._opened(
            self.package.AuthenticatedClient(
                base_url=self.served.base,
                token=self.served.token(user, admin=admin),
                raise_on_unexpected_status=True,
            )
        )

    def anonymous(self) -> Any:
        return self._opened(
            self.package.Client(base_url=self.served.base, raise_on_unexpected_status=True)
        )

    def _opened(self, client: Any) -> Any:
        # Entered now, closed by the fixture: each keeps its connections open until then.
        self.opened.append(client.__enter__())
        return client

    def close(self) -> None:
        for client in self.opened:
            client.__exit__(None, None, None)

    def order(self, user: str = BUYER, **changes: Any) -> Any:
        """The original's example order (``changes`` by the model's attribute names)."""
        m = self.models
        fields: dict[str, Any] = {
            "user_id": user,
            "items": [m.OrderItemIn(product_id=PRODUCT, quantity=1, product_price=10050)],
            "discount_policy_id": None,
            "discount_amount": None,
            "delivery_fee": 0,
            "payment_amount": 10050,
            "payment_type": m.PaymentType.CREDIT,
        }
        fields.update(changes)
        return m.PlaceOrderIn(**fields)

    def product(self, product_id: str, *, stock: int, max_per_user: int | None = None) -> Any:
        body = self.models.ProductIn(
            product_id=product_id,
            name="Keyboard",
            price=10050,
            stock=stock,
            **({} if max_per_user is None else {"max_per_user": max_per_user}),
        )
        answer = self.api("create_product").sync_detailed(
            client=self.as_user("ops", admin=True), body=body
        )
        assert answer.status_code == 201, answer.content
        return answer.parsed


@pytest.fixture(scope="module")
def gen(client: ModuleType, served: Served) -> Iterator[Generated]:
    generated = Generated(client, served)
    try:
        # The original's product, once per served instance (the browser test may have made it).
        answer = generated.api("create_product").sync_detailed(
            client=generated.as_user("ops", admin=True),
            body=client.models.ProductIn(
                product_id=PRODUCT, name="Keyboard", price=10050, stock=100
            ),
        )
        assert answer.status_code in (201, 409), answer.content
        yield generated
    finally:
        generated.close()


def eventually(read: Callable[[], Any], *, until: Callable[[Any], bool]) -> Any:
    """The query side lags the 201 by a few milliseconds (docs/events.md): poll briefly."""
    deadline = time.monotonic() + 10
    while True:
        answer = read()
        if until(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


def test_the_whole_flow_through_the_generated_client(gen: Generated) -> None:
    m = gen.models
    fresh = f"PRD_{uuid.uuid4().hex[:12]}"
    product = gen.product(fresh, stock=10, max_per_user=2)
    assert isinstance(product, m.ProductOut)
    assert (product.product_id, product.available, product.sold) == (fresh, 10, 0)
    buyer = gen.as_user(BUYER)
    place = gen.api("place_order")
    key = str(uuid.uuid4())

    first = place.sync_detailed(client=buyer, body=gen.order(), idempotency_key=key)
    assert first.status_code == 201
    order = first.parsed
    assert isinstance(order, m.OrderOut)
    assert (order.status, order.payment_amount, order.user_id) == (
        m.OrderStatus.CREATED,
        10050,
        BUYER,
    )
    assert "Idempotent-Replayed" not in first.headers

    replay = place.sync_detailed(client=buyer, body=gen.order(), idempotency_key=key)
    # A replay is the first answer again, status included, marked by the declared header.
    assert replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.parsed.to_dict() == order.to_dict()

    get = gen.api("get_order")
    read = eventually(
        lambda: get.sync_detailed(order.order_id, client=buyer),
        until=lambda a: a.status_code == 200,
    )
    assert isinstance(read.parsed, m.OrderOut)
    assert read.parsed.order_id == order.order_id

    second = place.sync_detailed(client=buyer, body=gen.order(), idempotency_key=str(uuid.uuid4()))
    assert second.status_code == 201
    listing = gen.api("list_orders")
    unset = importlib.import_module(f"{PACKAGE}.types").UNSET

    def every_page() -> tuple[list[str], int]:
        """The buyer's order ids, one per page, following the cursor to the end."""
        ids: list[str] = []
        cursor, pages = unset, 0
        while True:
            page = listing.sync_detailed(client=buyer, user_id=BUYER, limit=1, cursor=cursor)
            assert isinstance(page.parsed, m.OrderPage)
            ids += [o.order_id for o in page.parsed.items]
            pages += 1
            if not isinstance(page.parsed.next_cursor, str):
                return ids, pages
            cursor = page.parsed.next_cursor

    newest = second.parsed.order_id
    ids, pages = eventually(every_page, until=lambda found: newest in found[0])
    assert pages >= 2
    # Newest first, each order once.
    assert ids.index(newest) < ids.index(order.order_id)
    assert len(ids) == len(set(ids))

    cancel = gen.api("cancel_order")
    cancelled = cancel.sync_detailed(order.order_id, client=buyer)
    assert cancelled.status_code == 200
    assert cancelled.parsed.status == m.OrderStatus.CANCELLED
    again = cancel.sync_detailed(order.order_id, client=buyer)
    assert (again.status_code, again.parsed.status) == (200, m.OrderStatus.CANCELLED)


def _problem(gen: Generated, answer: Any, status: int, type_name: str) -> Any:
    assert answer.status_code == status, answer.content
    problem = answer.parsed
    assert isinstance(problem, gen.models.Problem), answer.content
    assert problem.type_ is gen.models.ProblemType[type_name]
    assert problem.status == status
    return problem


def test_every_provokable_problem_parses_into_the_typed_problem(gen: Generated) -> None:
    m = gen.models
    place, get, cancel = gen.api("place_order"), gen.api("get_order"), gen.api("cancel_order")
    admin = gen.as_user("ops", admin=True)
    user = f"u_{uuid.uuid4().hex[:10]}"
    buyer = gen.as_user(user)

    _problem(
        gen,
        gen.api("get_product").sync_detailed(PRODUCT, client=gen.anonymous()),
        401,
        "UNAUTHORIZED",
    )
    _problem(gen, place.sync_detailed(client=buyer, body=gen.order(BUYER)), 403, "FORBIDDEN")
    _problem(gen, get.sync_detailed(str(uuid.uuid4()), client=buyer), 404, "NOT_FOUND")

    created = gen.api("create_product")
    taken = gen.models.ProductIn(product_id=PRODUCT, name="Again", price=1, stock=1)
    _problem(gen, created.sync_detailed(client=admin, body=taken), 409, "ALREADY_EXISTS")

    scarce = f"PRD_{uuid.uuid4().hex[:12]}"
    gen.product(scarce, stock=3, max_per_user=2)
    line = m.OrderItemIn(product_id=scarce, quantity=3, product_price=10050)
    limited = _problem(
        gen,
        place.sync_detailed(client=buyer, body=gen.order(user, items=[line], payment_amount=30150)),
        409,
        "LIMIT_REACHED",
    )
    assert (limited.product_id, limited.limit) == (scarce, 2)
    line = m.OrderItemIn(product_id=scarce, quantity=2, product_price=10050)
    bought = place.sync_detailed(
        client=buyer, body=gen.order(user, items=[line], payment_amount=20100)
    )
    assert bought.status_code == 201
    stock = gen.api("change_stock")
    below = stock.sync_detailed(scarce, client=admin, body=m.StockChangeIn(set_=1))
    _problem(gen, below, 409, "STOCK_BELOW_COMMITTED")
    latecomer = f"u_{uuid.uuid4().hex[:10]}"
    gone = place.sync_detailed(
        client=gen.as_user(latecomer),
        body=gen.order(latecomer, items=[line], payment_amount=20100),
    )
    assert _problem(gen, gone, 409, "SOLD_OUT").product_id == scarce

    tampered = _problem(
        gen,
        place.sync_detailed(client=buyer, body=gen.order(user, payment_amount=1)),
        422,
        "PRICE_MISMATCH",
    )
    assert (tampered.field, tampered.expected, tampered.given) == ("paymentAmount", 10050, 1)
    unknown = gen.order(user, discount_policy_id=f"NOPE_{uuid.uuid4().hex[:6]}")
    _problem(gen, place.sync_detailed(client=buyer, body=unknown), 422, "UNKNOWN_REFERENCE")
    policy = f"BIG_{uuid.uuid4().hex[:6]}"
    made = gen.api("create_discount_policy").sync_detailed(
        client=admin,
        body=m.DiscountPolicyIn(
            policy_id=policy, kind=m.DiscountKind.FIXED, value=1000, min_order_amount=10**9
        ),
    )
    assert made.status_code == 201
    assert made.parsed.min_order_amount == 10**9
    assert made.parsed.max_discount is None
    discounted = gen.order(
        user, discount_policy_id=policy, discount_amount=1000, payment_amount=9050
    )
    _problem(
        gen, place.sync_detailed(client=buyer, body=discounted), 422, "DISCOUNT_NOT_APPLICABLE"
    )
    key = str(uuid.uuid4())
    assert (
        place.sync_detailed(client=buyer, body=gen.order(user), idempotency_key=key).status_code
        == 201
    )
    changed = gen.order(user, delivery_fee=3000, payment_amount=13050)
    _problem(
        gen,
        place.sync_detailed(client=buyer, body=changed, idempotency_key=key),
        422,
        "IDEMPOTENCY_KEY_REUSED",
    )
    both = stock.sync_detailed(scarce, client=admin, body=m.StockChangeIn(add=1, set_=5))
    _problem(gen, both, 422, "INVALID_REQUEST")
    zero = gen.order(
        user, items=[m.OrderItemIn(product_id=PRODUCT, quantity=0, product_price=10050)]
    )
    invalid = _problem(gen, place.sync_detailed(client=buyer, body=zero), 422, "VALIDATION_ERROR")
    assert [issue.location for issue in invalid.errors] == [["body", "items", "0", "quantity"]]

    huge = gen.order("u" * 70_000)
    _problem(gen, place.sync_detailed(client=buyer, body=huge), 413, "PAYLOAD_TOO_LARGE")

    # The per-user bucket holds FLASHORDER_RATE_USER_BURST (60) tokens and refills at
    # _RATE_USER_PER_SECOND (20): cancels faster than that run dry and wait.
    hasty = gen.as_user(f"u_{uuid.uuid4().hex[:10]}")
    answers = []
    for _ in range(gen.served.settings.rate_user_burst * 5):
        answers.append(cancel.sync_detailed(str(uuid.uuid4()), client=hasty))
        if answers[-1].status_code == 429:
            break
    assert {a.status_code for a in answers} == {404, 429}
    _problem(gen, answers[-1], 429, "TOO_MANY_REQUESTS")
    assert int(answers[-1].headers["Retry-After"]) >= 1
