"""Swagger UI at ``/docs``, served from the package: it works where no CDN can be reached.

The assets are npm's ``swagger-ui-dist`` at the version in ``swagger_ui/VERSION``, vendored
by ``scripts/vendor-swagger-ui.sh`` (which checks the registry's integrity hash); the test
suite checks them against ``swagger_ui/SHA256SUMS``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS = Path(__file__).with_name("swagger_ui")
ASSETS_PATH = "/docs/assets"


def install(app: FastAPI) -> None:
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        # Behind a proxy that strips a prefix, every URL of the page carries it again.
        root = request.scope.get("root_path", "").rstrip("/")
        assets = root + ASSETS_PATH
        return get_swagger_ui_html(
            openapi_url=root + (app.openapi_url or "/openapi.json"),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": True, "displayOperationId": True},
        )
