"""The pack's `GET /pixart/axera` on a real aiohttp server: what a client of ComfyUI's port may ask."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from pixart_nodes.core.axera.pipeline import MODEL_DIR_MAX_LENGTH, MODEL_DIR_PATTERN

ROOT = Path(__file__).resolve().parents[1]


@pytest_asyncio.fixture
async def client(aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    (tmp_path / "axera" / "build1").mkdir(parents=True)
    fp = types.ModuleType("folder_paths")
    fp.folder_names_and_paths, fp.models_dir = {}, str(tmp_path)
    srv = types.ModuleType("server")
    srv.PromptServer = type("PromptServer", (), {"instance": types.SimpleNamespace(routes=web.RouteTableDef())})
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    monkeypatch.setitem(sys.modules, "server", srv)
    monkeypatch.delenv("PIXART_AXERA_MODEL_DIR", raising=False)
    from pixart_nodes import routes

    routes.register()
    app = web.Application()
    app.add_routes(srv.PromptServer.instance.routes)
    return await aiohttp_client(app)


@pytest.mark.parametrize("query, field", [
    ({"model_dir": "x" * 300}, "model_dir"),  # was 500 text/plain: the file system refused the name
    ({"model_dir": "/etc"}, "model_dir"),  # absolute paths, ~user and .. told existing folders from missing ones
    ({"model_dir": "~root"}, "model_dir"),
    ({"model_dir": "../.."}, "model_dir"),
    ({"model_dir": "build1/../../x"}, "model_dir"),
    ({"model_dir": "a\x00b"}, "model_dir"),
    ({"runtime": "tpu" * 1000}, "runtime"),
])
@pytest.mark.asyncio
async def test_a_query_the_workflows_could_not_send_is_a_json_400_naming_the_field(client: Any, query, field):
    r = await client.get("/pixart/axera", params=query)
    assert r.status == 400 and r.content_type == "application/json"
    error = (await r.json())["error"]
    assert error.startswith(f"{field}:") and len(error) < 200


def test_the_route_and_the_loader_refuse_a_runtime_in_the_same_words() -> None:
    from pixart_nodes import routes
    from pixart_nodes.core.axera.runtime import resolve_runtime

    with pytest.raises(ValueError) as by_route:
        routes.check_axera_query("", "tpu" * 1000)
    with pytest.raises(ValueError) as by_loader:
        resolve_runtime("tpu" * 1000)
    assert str(by_route.value) == str(by_loader.value)
    assert str(by_route.value).startswith("runtime: must be one of auto, axengine, onnxruntime, got 'tputpu")
    assert len(str(by_route.value)) < 200


@pytest.mark.parametrize("model_dir, found_folder", [("", "axera"), ("build1", "build1"), ("no_such/build", None)])
@pytest.mark.asyncio
async def test_a_sub_folder_name_is_answered(client: Any, model_dir: str, found_folder: str | None):
    r = await client.get("/pixart/axera", params={"model_dir": model_dir, "runtime": "onnxruntime"})
    assert r.status == 200
    body = await r.json()
    assert body["found"] is False and isinstance(body["reason"], str)
    if found_folder:
        assert body["model_dir"].endswith(found_folder)


def test_the_manifests_model_dir_rule_is_the_routes():
    for name in ("axera_txt2img", "axera_img2img"):
        spec = json.loads((ROOT / "workflows" / f"{name}.manifest.json").read_text())["parameters"]["model_dir"]
        assert (spec["pattern"], spec["max_length"]) == (MODEL_DIR_PATTERN, MODEL_DIR_MAX_LENGTH), name
