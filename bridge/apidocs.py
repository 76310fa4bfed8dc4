"""Interactive API documentation: `/docs` serves the generated OpenAPI spec in Swagger UI, and `/` links to it.

The Swagger UI assets come from the `swagger-ui-py` package installed with the bridge, never from a CDN: the bridge
runs offline on a Raspberry Pi as often as on a server.
"""
from __future__ import annotations

import html
from pathlib import Path

from aiohttp import web

from bridge.openapi import hidden

# The files the page loads; nothing else in the package's folder is served.
ASSETS = {
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui-standalone-preset.js": "application/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}


def assets_dir() -> Path:
    import swagger_ui

    return Path(swagger_ui.__file__).resolve().parent / "static"


PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title} - API docs</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/docs/assets/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true, tryItOutEnabled: false,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "BaseLayout",
      persistAuthorization: true
    }});
  </script>
</body>
</html>
"""

INDEX = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title></head>
<body>
  <h1>{title} {version}</h1>
  <p>An API bridge in front of ComfyUI: Pixart editor, jobs, A1111 <code>/sdapi/v1</code>, Pico, AleaArt,
     <code>/generate</code> and any workflow at <code>/workflows/NAME</code>.</p>
  <ul>
    <li><a href="/docs">Interactive API documentation</a> (Swagger UI)</li>
    <li><a href="/openapi.json">OpenAPI document</a></li>
    <li><a href="/workflows">Workflows served here</a></li>
    <li><a href="/health">Health</a></li>
  </ul>
</body>
</html>
"""


@hidden
async def docs_page(request: web.Request) -> web.Response:
    """Swagger UI for this bridge's OpenAPI document."""
    return web.Response(text=PAGE.format(title="Pixart bridge"), content_type="text/html")


@hidden
async def docs_asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    kind = ASSETS.get(name)
    if kind is None:
        raise web.HTTPNotFound()
    return web.FileResponse(assets_dir() / name, headers={"Content-Type": kind,
                                                          "Cache-Control": "public, max-age=86400"})


def index_page(version: str) -> web.Response:
    return web.Response(text=INDEX.format(title="Pixart bridge", version=html.escape(version)),
                        content_type="text/html")


def setup(app: web.Application) -> None:
    app.router.add_get("/docs", docs_page)
    app.router.add_get("/docs/assets/{name}", docs_asset)
