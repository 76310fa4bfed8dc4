"""HTTP routes the pack adds to ComfyUI's server, for clients that need facts only the backend can read.

`GET /pixart/embeddings`: every textual-inversion embedding of ComfyUI's `embeddings` folders by the name a
prompt uses (`embedding:NAME` in ComfyUI, the bare name in A1111), with its vector width and count. The Pixart
bridge reports them as A1111's `/sdapi/v1/embeddings`.

`GET /pixart/axera?model_dir=&runtime=`: whether this machine holds an Axera model set where the Axera Loader
would look (`found`, `img2img`, `model_dir`, `runtime`, `reason`), from the files alone. The bridge's `/generate`
picks its backend with it.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger("pixart_nodes")


def embeddings_summary() -> dict[str, dict]:
    import folder_paths

    from .core import model_files

    out: dict[str, dict] = {}
    for name in folder_paths.get_filename_list("embeddings"):
        path = folder_paths.get_full_path("embeddings", name)
        if path is None:
            continue
        try:
            out[os.path.splitext(name)[0]] = model_files.embedding_summary(path)
        except Exception as exc:  # noqa: BLE001 - one unreadable file must not hide the others
            log.warning("pixart: embedding %s skipped: %s", name, exc)
    return out


def axera_status(model_dir: str, runtime: str) -> dict:
    from .core.axera.pipeline import inspect_model_dir
    from .nodes_axera import _model_dir

    try:
        folder = _model_dir(model_dir)
    except ValueError as exc:
        return {"model_dir": model_dir, "found": False, "img2img": False, "runtime": None, "reason": str(exc)}
    return inspect_model_dir(folder, runtime)


def register() -> None:
    """Add the routes to ComfyUI's running server (no-op outside ComfyUI)."""
    try:
        from aiohttp import web
        from server import PromptServer
    except ImportError:
        return
    server = getattr(PromptServer, "instance", None)
    if server is None:
        return

    @server.routes.get("/pixart/embeddings")
    async def pixart_embeddings(request: web.Request) -> web.Response:
        import asyncio

        return web.json_response(await asyncio.to_thread(embeddings_summary))

    @server.routes.get("/pixart/axera")
    async def pixart_axera(request: web.Request) -> web.Response:
        import asyncio

        status = await asyncio.to_thread(axera_status, request.query.get("model_dir", ""),
                                         request.query.get("runtime", "auto"))
        return web.json_response(status)
