"""HTTP routes the pack adds to ComfyUI's server, for clients that need facts only the backend can read.

`GET /pixart/embeddings`: every textual-inversion embedding of ComfyUI's `embeddings` folders by the name a
prompt uses (`embedding:NAME` in ComfyUI, the bare name in A1111), with its vector width and count. The Pixart
bridge reports them as A1111's `/sdapi/v1/embeddings`.

`GET /pixart/axera?model_dir=&runtime=`: whether this machine holds an Axera model set where the Axera Loader
would look (`found`, `img2img`, `model_dir`, `runtime`, `reason`), from the files alone. The bridge's `/generate`
picks its backend with it. It takes what the Axera workflows' model_dir takes (a sub-folder of the Axera model
folders, or empty) and a known runtime, else answers 400 `{"error": "model_dir: ..."}`.
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


def check_axera_query(model_dir: str, runtime: str) -> None:
    """ValueError naming the field unless the query is one the workflows could send: the route answers any client
    of ComfyUI's port, which may name only what the workflows' model_dir takes."""
    from .core.axera.pipeline import check_model_dir_name
    from .core.axera.runtime import check_runtime_name

    check_model_dir_name(model_dir)
    check_runtime_name(runtime)


def axera_status(model_dir: str, runtime: str) -> dict:
    from .core.axera.pipeline import inspect_model_dir
    from .nodes_axera import _model_dir

    out = {"model_dir": model_dir, "found": False, "img2img": False, "runtime": None}
    try:
        return inspect_model_dir(_model_dir(model_dir), runtime)
    except ValueError as exc:
        return {**out, "reason": str(exc)}
    except OSError as exc:  # e.g. a name the file system refuses: the folder cannot be there
        return {**out, "reason": f"model_dir: cannot be read ({exc.strerror or exc})"}


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

        model_dir, runtime = request.query.get("model_dir", ""), request.query.get("runtime", "auto")
        try:
            check_axera_query(model_dir, runtime)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(await asyncio.to_thread(axera_status, model_dir, runtime))
