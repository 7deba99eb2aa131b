"""The live sale page in a real browser: Debian's headless Chromium, driven by Playwright,
watches a small sale on the full stack (two API workers) and sees what a person would see.

Set ``FLASHORDER_SCREENSHOTS`` to a folder to keep the screenshots (docs/images holds those
of a real run); otherwise they go to the test's temporary folder.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.support.api import HttpApi
from tests.support.calls import new_product, new_queued_product, order_body

pytestmark = [pytest.mark.services, pytest.mark.slow]

#: What the page shows for a figure it has not received yet.
NOT_YET = "\u2013"


@pytest.fixture
def chromium() -> str:
    # Never `playwright install`: the browser is Debian's (scripts/chromium.sh).
    found = shutil.which("chromium")
    assert found is not None, "chromium is missing: run scripts/chromium.sh"
    return found


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as driver:
        launched = await driver.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            await launched.close()


def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("FLASHORDER_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def number(page: Page, selector: str) -> float:
    text = (await page.inner_text(selector)).replace(",", "")
    return float(text) if text not in (NOT_YET, "") else -1.0


async def wait_until(page: Page, test: str, arg: object = None, timeout: float = 60) -> None:
    await page.wait_for_function(test, arg=arg, timeout=timeout * 1000)


async def buy(api: HttpApi, pid: str, user: str, price: int = 10050) -> int:
    reply = await api.call(
        "POST", "/api/v1/orders", order_body(user, (pid, 1, price)), token=api.token(user)
    )
    return reply.status


async def test_an_admin_watches_a_sale_sell_out_in_the_browser(
    stack_api: HttpApi, browser: Browser, tmp_path: Path
) -> None:
    pid = await new_product(stack_api, stock=40, max_per_user=2, name="Mechanical keyboard")
    # bypass_csp: Playwright's waits evaluate scripts, which the page's policy forbids.
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # No session yet: the page sends the browser to the login form, which brings it back.
    await page.goto(f"{stack_api.base}/sales/{pid}")
    assert "/sales/login" in page.url
    await page.fill("#token", stack_api.token("ops", admin=True))
    await page.click("#sign-in")
    await page.wait_for_url(f"**/sales/{pid}")
    await wait_until(page, "document.getElementById('available').textContent === '40'")
    assert await page.inner_text("#product-name") == "Mechanical keyboard"
    sold_out_before = await number(page, "#refusal-sold-out")
    invalid_before = await number(page, "#refusal-invalid")

    # The sale, in waves a second apart so that the page sees it move: 30 buyers, two
    # orders each (a third is refused: limit), some with a tampered price (invalid).
    seen_sold: set[float] = set()
    for wave in range(6):
        statuses = await asyncio.gather(
            *(buy(stack_api, pid, f"b{wave}_{i}_{pid[-4:]}") for i in range(6)),
            *(buy(stack_api, pid, f"b{wave}_{i}_{pid[-4:]}") for i in range(6)),
            *(buy(stack_api, pid, f"b{wave}_0_{pid[-4:]}") for _ in range(1)),
            buy(stack_api, pid, f"t{wave}_{pid[-4:]}", price=1),
        )
        assert 500 not in statuses
        await asyncio.sleep(1.2)
        seen_sold.add(await number(page, "#sold"))
    await wait_until(page, "document.getElementById('available').textContent === '0'")
    await wait_until(page, "document.getElementById('sold').textContent === '40'")
    await wait_until(
        page,
        "([id, before]) => Number(document.getElementById(id).textContent.replace(/,/g, ''))"
        " > before",
        ["refusal-sold-out", sold_out_before],
    )
    await wait_until(
        page,
        "([id, before]) => Number(document.getElementById(id).textContent.replace(/,/g, ''))"
        " > before",
        ["refusal-invalid", invalid_before],
    )
    await wait_until(page, "document.getElementById('orders-CREATED').textContent === '40'")
    # The numbers moved while the sale ran, not just once at the end.
    assert len(seen_sold - {-1.0}) >= 2, seen_sold
    # The stock chart drew a line through several points.
    points = await page.get_attribute("#chart-stock polyline", "points")
    assert points is not None
    assert len(points.split()) >= 3
    assert "live" in await page.inner_text("#status")
    folder = screenshots(tmp_path)
    await page.screenshot(path=str(folder / "sale-page.png"), full_page=True)

    await page.goto(f"{stack_api.base}/sales")
    row = f"#products tr[data-product='{pid}']"
    await page.wait_for_selector(row, timeout=30_000)
    cells = await page.locator(f"{row} td").all_inner_texts()
    assert cells[2] == "0"  # available
    assert cells[3] == "40"  # sold
    await page.screenshot(path=str(folder / "sales-overview.png"), full_page=True)
    assert errors == []
    await context.close()


async def test_an_admin_watches_a_queued_drop_draw_and_admit_in_the_browser(
    stack_api: HttpApi, browser: Browser, tmp_path: Path
) -> None:
    pid = await new_queued_product(stack_api, stock=6, starts_in=12.0, rate=2.0)
    buyers = [f"qb{i}_{pid[-6:]}" for i in range(20)]
    tickets = []
    for user in buyers:
        joined = await stack_api.call(
            "POST", f"/api/v1/sales/{pid}/queue", token=stack_api.token(user)
        )
        assert joined.status == 201, joined.body
        tickets.append(joined.body["ticketId"])
    context = await browser.new_context(viewport={"width": 1280, "height": 1100}, bypass_csp=True)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{stack_api.base}/sales/login?next=/sales/{pid}")
    await page.fill("#token", stack_api.token("ops", admin=True))
    await page.click("#sign-in")
    await page.wait_for_url(f"**/sales/{pid}")

    # Before the start: the line is there, not drawn, and its seed is not shown.
    await wait_until(page, "document.getElementById('queue-waiting').textContent === '20'")
    assert await page.is_visible("#queue")
    assert await page.inner_text("#queue-draw") == "not yet"
    assert await page.inner_text("#queue-seed") == "shown once drawn"
    assert await page.inner_text("#queue-admission-asked") == "2/s"

    async def look() -> None:
        # The buyers' pages look at their tickets, which keeps the room admitting.
        while True:
            for user, ticket in zip(buyers, tickets, strict=True):
                await stack_api.call(
                    "GET", f"/api/v1/sales/{pid}/queue/{ticket}", token=stack_api.token(user)
                )
            await asyncio.sleep(0.5)

    looking = asyncio.create_task(look())
    try:
        # After the start: drawn, its seed shown, buyers admitted and the line shorter.
        await wait_until(
            page, "document.getElementById('queue-draw').textContent !== 'not yet'", timeout=90
        )
        await wait_until(
            page,
            "Number(document.getElementById('queue-admitted').textContent) >= 2",
            timeout=90,
        )
    finally:
        looking.cancel()
    assert re.fullmatch(r"[0-9a-f]{16,}", await page.inner_text("#queue-seed"))
    assert await number(page, "#queue-waiting") < 20
    points = await page.get_attribute("#chart-queue polyline", "points")
    assert points is not None
    await page.screenshot(path=str(screenshots(tmp_path) / "sale-page-queue.png"), full_page=True)
    assert errors == []
    await context.close()
