"""AUTOMATIC1111's API (`/sdapi/v1`) and its Pico LCD variant: one dialect, two adapters.

- adapter `a1111` (this module's `setup`): the `/sdapi/v1` routes (`routes`);
- adapter `pico` (`pico.setup`): `POST /pico/sdapi/v1/txt2img`, an A1111 txt2img answered as RGB565 for a small LCD.

Parts: `models` (request and error bodies), `generation` (defaults, infotext, `info`), `imaging` (img2img image and
mask steps), `dialect` (settings, auth, error rendering, tasks), `routes` (handlers), `pico`. With `PICO_MODE=true`
`/sdapi/v1/txt2img` itself answers in RGB565, so an unmodified Pico client pointed at the bridge works.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from . import catalog, extras, models, pico, routes
from .dialect import PREFIX, a1111_endpoint, ensure_state


def generation_route(app: web.Application, handler: routes.Handler, model: type[models.GenerationRequest],
                     answer: object = routes.GenerationAnswer) -> routes.Handler:
    """A generation route whose body model carries this server's limits (A1111_MAX_STEPS, A1111_MAX_SIZE)."""
    settings = ensure_state(app).settings
    body = models.limited(model, settings.max_steps, settings.max_size)
    return a1111_endpoint(body=body, responses={200: answer}, empty_body={})(handler)


def setup(app: web.Application) -> None:
    ensure_state(app)
    r = app.router
    txt2img = pico.typed_route(app) if pico.mode_on(app) else generation_route(app, routes.txt2img,
                                                                                models.Txt2ImgRequest)
    r.add_post(f"{PREFIX}/txt2img", txt2img)
    r.add_post(f"{PREFIX}/img2img", generation_route(app, routes.img2img, models.Img2ImgRequest))
    for method, path, handler in (*routes.ROUTES, *catalog.ROUTES, *extras.ROUTES):
        r.add_route(method, f"{PREFIX}/{path}", handler)
    r.add_get("/internal/ping", routes.ping)
    app.middlewares.append(unmatched_routes)


@web.middleware
async def unmatched_routes(request: web.Request, handler: Any) -> web.StreamResponse:
    """Unknown `/sdapi` paths and wrong methods answer as A1111 (FastAPI) does: `{"detail": "Not Found"}` 404 and
    `{"detail": "Method Not Allowed"}` 405; clients probe optional routes and read that body."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        if not request.path.startswith("/sdapi/"):
            raise
        return web.json_response({"detail": "Not Found"}, status=404)
    except web.HTTPMethodNotAllowed as exc:
        if not request.path.startswith("/sdapi/"):
            raise
        return web.json_response({"detail": "Method Not Allowed"}, status=405, headers={"Allow": exc.headers.get(
            "Allow", "")})
