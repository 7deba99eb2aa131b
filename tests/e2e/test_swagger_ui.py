"""Swagger UI works with no network beyond the service: headless Chromium (Debian's, installed
by scripts/chromium.sh) opens /docs with every request elsewhere refused, finds the
operations, and places the original's example order through "Try it out".
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Route, expect, sync_playwright

from flashorder.entrypoints.api.docs_ui import ASSETS
from tests.support.served import Served

CHROMIUM = Path("/usr/bin/chromium")
PRODUCT = "PRD_240701120000001_0001_101"
BUYER = "test1234"


def ensure_product(served: Served) -> None:
    body = {"productId": PRODUCT, "name": "Keyboard", "price": 10050, "stock": 100}
    request = urllib.request.Request(
        f"{served.base}/api/v1/products",
        data=json.dumps(body).encode(),
        headers={
            "content-type": "application/json",
            "Authorization": f"Bearer {served.token('ops', admin=True)}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status = answer.status
    except urllib.error.HTTPError as refused:
        status = refused.code
    # 409: another test of this session made it already.
    assert status in (201, 409)


def test_the_vendored_swagger_ui_files_are_the_pinned_ones() -> None:
    sums = (ASSETS / "SHA256SUMS").read_text().splitlines()
    assert sums
    for line in sums:
        digest, name = line.split()
        assert hashlib.sha256((ASSETS / name).read_bytes()).hexdigest() == digest, (
            f"{name} changed: scripts/vendor-swagger-ui.sh writes these files"
        )


@pytest.mark.slow
def test_swagger_ui_places_the_example_order_with_no_network_beyond_the_service(
    served: Served,
) -> None:
    assert CHROMIUM.exists(), "no Chromium: run scripts/chromium.sh (make test does)"
    ensure_product(served)
    elsewhere: list[str] = []

    def only_the_service(route: Route) -> None:
        if route.request.url.startswith(served.base + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        try:
            context = browser.new_context()
            context.route("**/*", only_the_service)
            page = context.new_page()
            page.goto(f"{served.base}/docs")

            place = page.locator("#operations-orders-placeOrder")
            expect(place).to_be_visible(timeout=30_000)
            listed = page.locator(".opblock-summary-operation-id").all_inner_texts()
            assert {"placeOrder", "getOrder", "listOrders", "cancelOrder", "createProduct"} <= set(
                listed
            ), listed

            page.locator("button.authorize").first.click()
            page.locator(".modal-ux input").first.fill(served.token(BUYER))
            page.locator(".modal-ux button.modal-btn.authorize").click()
            page.locator(".modal-ux button.btn-done").click()

            place.locator(".opblock-summary").click()
            place.locator("button.try-out__btn").click()
            # The body is prefilled with the original's example order, left as it is.
            body = place.locator("textarea.body-param__text")
            assert json.loads(body.input_value())["userId"] == BUYER
            place.locator("button.execute").click()

            status = place.locator(".live-responses-table .response .response-col_status").first
            expect(status).to_have_text("201", timeout=30_000)
            answer = place.locator(".live-responses-table .response-col_description pre").first
            assert '"status": "CREATED"' in answer.inner_text()
        finally:
            browser.close()

    assert elsewhere == [], f"the page asked for more than the service: {elsewhere}"
