"""The live sale page's doors: who gets in, how a browser logs in, and what the metrics count."""

from __future__ import annotations

import re
from urllib.parse import quote

from flashorder.entrypoints.api.sale_session import COOKIE
from tests.support.api import InProcessApi
from tests.support.calls import new_product, place

HTML = {"accept": "text/html,application/xhtml+xml"}


async def login(api: InProcessApi, token: str, next_page: str = "/sales") -> tuple[int, str, str]:
    """Post the login form; returns (status, Location, Set-Cookie)."""
    form = f"token={quote(token)}&next={quote(next_page)}".encode()
    reply = await api.call(
        "POST",
        "/sales/login",
        content=form,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    return reply.status, reply.headers.get("location", ""), reply.headers.get("set-cookie", "")


def session_of(set_cookie: str) -> str:
    found = re.search(rf"{COOKIE}=([^;]+)", set_cookie)
    assert found is not None, set_cookie
    return found.group(1)


async def test_a_browser_without_a_session_is_sent_to_the_login_form(
    embedded_api: InProcessApi,
) -> None:
    pid = await new_product(embedded_api, stock=5)
    reply = await embedded_api.call("GET", f"/sales/{pid}", headers=HTML)
    assert reply.status == 303
    assert reply.headers["location"] == f"/sales/login?next=/sales/{pid}"
    form = await embedded_api.call("GET", "/sales/login", headers=HTML)
    assert form.status == 200
    assert 'name="token"' in form.body


async def test_tools_without_credentials_get_401_and_users_403(embedded_api: InProcessApi) -> None:
    pid = await new_product(embedded_api, stock=5)
    stream = {"accept": "text/event-stream"}
    assert (await embedded_api.call("GET", f"/sales/{pid}")).status == 401
    assert (await embedded_api.call("GET", "/sales", headers=stream)).status == 401
    buyer = embedded_api.token("buyer1")
    refused = await embedded_api.call("GET", f"/sales/{pid}", token=buyer)
    assert refused.status == 403
    assert refused.body["type"] == "urn:flashorder:problem:forbidden"


async def test_an_admin_token_opens_the_page_with_a_strict_content_policy(
    embedded_api: InProcessApi,
) -> None:
    pid = await new_product(embedded_api, stock=5)
    reply = await embedded_api.call(
        "GET", f"/sales/{pid}", token=embedded_api.token("ops", admin=True)
    )
    assert reply.status == 200
    assert 'data-page="sale"' in reply.body
    policy = reply.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy


async def test_login_gives_a_short_lived_http_only_strict_cookie_that_opens_the_page(
    embedded_api: InProcessApi,
) -> None:
    pid = await new_product(embedded_api, stock=5)
    status, location, set_cookie = await login(
        embedded_api, embedded_api.token("ops", admin=True), f"/sales/{pid}"
    )
    assert status == 303
    assert location == f"/sales/{pid}"
    flags = set_cookie.lower()
    assert "httponly" in flags
    assert "samesite=strict" in flags
    assert "path=/sales" in flags
    assert "max-age=1800" in flags
    # Plain HTTP here; behind HTTPS the cookie is also Secure.
    assert "secure" not in flags.replace("samesite", "")
    cookie = {"cookie": f"{COOKIE}={session_of(set_cookie)}", **HTML}
    page = await embedded_api.call("GET", f"/sales/{pid}", headers=cookie)
    assert page.status == 200
    assert (await embedded_api.call("GET", "/sales", headers=cookie)).status == 200


async def test_login_refuses_a_buyer_token_a_forged_cookie_and_foreign_redirects(
    embedded_api: InProcessApi,
) -> None:
    status, location, set_cookie = await login(embedded_api, embedded_api.token("buyer1"))
    assert (status, set_cookie) == (303, "")
    assert location.startswith("/sales/login?error=not-admin")
    status, location, set_cookie = await login(embedded_api, "not-a-token")
    assert (status, set_cookie) == (303, "")
    assert location.startswith("/sales/login?error=invalid")
    # A session names its admin: changing the name breaks the signature.
    _, _, set_cookie = await login(embedded_api, embedded_api.token("ops", admin=True))
    payload, signature = session_of(set_cookie).split(".")
    forged = f"{COOKIE}={payload[:-2]}xx.{signature}"
    reply = await embedded_api.call("GET", "/sales", headers={"cookie": forged, **HTML})
    assert reply.status == 303
    for target in ("https://elsewhere.example/", "//elsewhere.example/sales", "/api/v1/orders"):
        _, location, _ = await login(embedded_api, embedded_api.token("ops", admin=True), target)
        assert location == "/sales"


async def test_metrics_count_order_calls_by_outcome_and_read_the_sale_from_the_database(
    embedded_api: InProcessApi,
) -> None:
    pid = await new_product(embedded_api, stock=2, max_per_user=1)
    assert (await place(embedded_api, "m4", (pid, 1, 999))).status == 422  # tampered price
    assert (await place(embedded_api, "m1", (pid, 1, 10050))).status == 201
    assert (await place(embedded_api, "m1", (pid, 1, 10050))).status == 409  # limit
    assert (await place(embedded_api, "m2", (pid, 1, 10050))).status == 201
    assert (await place(embedded_api, "m3", (pid, 1, 10050))).status == 409  # sold out
    text = (await embedded_api.call("GET", "/metrics")).body
    route = 'method="POST",outcome="{}",route="/api/v1/orders"'

    def counted(outcome: str, status: int) -> float:
        line = (
            f'flashorder_http_requests_total{{method="POST",outcome="{outcome}",'
            f'route="/api/v1/orders",status="{status}"}} '
        )
        found = re.search(re.escape(line) + r"(\S+)", text)
        assert found is not None, (outcome, status)
        return float(found.group(1))

    assert counted("ok", 201) == 2
    assert counted("limit-reached", 409) == 1
    assert counted("sold-out", 409) == 1
    assert counted("price-mismatch", 422) == 1
    assert (
        'flashorder_http_request_duration_seconds_bucket{le="0.001",' + route.format("ok")
    ) in text
    assert f'flashorder_product_stock_units{{product_id="{pid}",state="sold"}} 2.0' in text
    assert f'flashorder_product_orders{{product_id="{pid}",status="CREATED"}} 2.0' in text
    assert 'flashorder_orders{status="CREATED"}' in text
    assert "flashorder_outbox_oldest_age_seconds" in text
    assert "flashorder_event_loop_lag_seconds" in text
    assert 'flashorder_db_pool_connections{state="limit"}' in text
