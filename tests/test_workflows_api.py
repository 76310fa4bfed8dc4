"""Any workflow is an endpoint: GET /workflows, GET /workflows/{name}, POST /workflows/{name}[?wait], reload, and
one typed OpenAPI path per workflow, over the ComfyUI protocol double."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bridge import workflows as W
from tests.support.imaging import decode_png_data_url, solid_png_b64
from tests.support.waiting import until

pytestmark = pytest.mark.asyncio


def shared_workflow(folder: Path, name: str = "my_pixels") -> Path:
    """A workflow someone shared: the model-free pixel-art graph under a new name, with a manifest of their own
    (a subset of the parameters, other defaults) and no Python."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(W.DEFAULT_WORKFLOWS_DIR / "pixel_art.json", folder / f"{name}.json")
    m = json.loads((W.DEFAULT_WORKFLOWS_DIR / "pixel_art.manifest.json").read_text())
    keep = ["sketch", "width", "height", "palette_source", "palette_name", "dither"]
    m.update(name=name, version=3, description="Pixelate a sketch to the PICO-8 palette.", workflow=f"{name}.json",
             parameters={k: v for k, v in m["parameters"].items() if k in keep}, checks=[])  # they read work_*
    m["parameters"]["palette_source"]["default"] = "named"
    m["parameters"]["palette_name"]["default"] = "pico-8"
    (folder / f"{name}.manifest.json").write_text(json.dumps(m))
    return folder


async def client_for(bridge_factory: Any, tmp_path: Path, **fields: Any) -> Any:
    extra = shared_workflow(tmp_path / "shared")
    return await bridge_factory(adapters=["jobs_api"], extra_workflows_dirs=[str(extra)], **fields)


async def test_list_and_describe(bridge_factory: Any, tmp_path: Path, comfy_double: Any) -> None:
    client = await client_for(bridge_factory, tmp_path)
    listed = await (await client.get("/workflows")).json()
    names = {w["name"]: w for w in listed["workflows"]}
    assert {"txt2img", "pixel_art", "my_pixels"} <= set(names)
    assert names["my_pixels"] == {"name": "my_pixels", "version": 3,
                                  "description": "Pixelate a sketch to the PICO-8 palette."}
    desc = await (await client.get("/workflows/my_pixels")).json()
    props = desc["parameters"]["properties"]
    assert set(props) == {"sketch", "width", "height", "palette_source", "palette_name", "dither"}
    assert desc["parameters"]["required"] == ["sketch"] and desc["parameters"]["additionalProperties"] is False
    assert props["palette_name"]["default"] == "pico-8" and props["sketch"]["contentEncoding"] == "base64"
    assert desc["outputs"]["images"] == {"type": "images"}
    # A value from a node's list (`choices_from`) is described by what the backend offers now, so a client can
    # find every palette and dither method without reading an error; a fixed list keeps its own enum.
    assert props["dither"]["enum"] == W.choices_in(comfy_double.object_info, "PixartQuantize.dither")
    assert props["palette_name"]["enum"] == W.choices_in(comfy_double.object_info, "PixartPalette.name")
    assert "floyd-steinberg" in props["dither"]["enum"] and len(props["palette_name"]["enum"]) >= 200
    assert props["palette_source"]["enum"] == ["named", "hex", "image"]
    core = await (await client.get("/workflows/txt2img")).json()
    assert core["parameters"]["properties"]["sampler"]["enum"] == W.choices_in(
        comfy_double.object_info, "KSampler.sampler_name")
    resp = await client.get("/workflows/nope")
    assert resp.status == 404 and (await resp.json())["field"] == "workflow"


async def test_post_runs_the_shared_workflow_and_waits_for_the_result(bridge_factory: Any, tmp_path: Path,
                                                                      comfy_double: Any) -> None:
    client = await client_for(bridge_factory, tmp_path)
    sketch = solid_png_b64(16, 16, (255, 0, 77))
    resp = await client.post("/workflows/my_pixels?wait=30",
                             json={"parameters": {"sketch": sketch, "width": 4, "height": 4}})
    job = await resp.json()
    assert resp.status == 200, job
    assert job["status"] == "completed" and job["type"] == "my_pixels"
    img = decode_png_data_url(job["result"]["outputs"]["images"][0])
    assert img.size == (4, 4) and job["result"]["images"] == job["result"]["outputs"]["images"]
    assert job["result"]["parameters"]["palette_name"] == "pico-8" and job["result"]["parameters"]["width"] == 4
    graph = comfy_double.prompts[-1]["prompt"]
    palette = next(n for n in graph.values() if n["class_type"] == "PixartPalette")
    assert palette["inputs"]["source"] == "named" and palette["inputs"]["name"] == "pico-8"
    # The job is a job of the jobs API: the same record at /jobs/{id}.
    same = await (await client.get(f"/jobs/{job['id']}")).json()
    assert same["status"] == "completed" and same["result"]["outputs"] == job["result"]["outputs"]
    listed = await (await client.get("/jobs?type=my_pixels")).json()
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]


async def test_a_waited_result_that_cannot_be_read_names_the_job_it_ran(bridge_factory: Any, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # a storage error while the answer read the result was a bare 500 in the core shape: the job had run, and the
    # client never learnt its id (GET /jobs/{id} answered the same failure naming the job)
    from bridge.keys import ENGINE

    client = await client_for(bridge_factory, tmp_path)

    async def unreadable(*args: Any, **kwargs: Any) -> bytes:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(client.app[ENGINE], "read_output", unreadable)
    resp = await client.post("/workflows/my_pixels?wait=30",
                             json={"parameters": {"sketch": solid_png_b64(8, 8, (0, 0, 0)), "width": 2, "height": 2}})
    data = await resp.json()
    [job] = (await (await client.get("/jobs?type=my_pixels")).json())["jobs"]
    assert resp.status == 500 and data == {"error": f"The result of job {job['id']} cannot be read", "field": "id"}
    resp = await client.get(f"/jobs/{job['id']}")
    assert resp.status == 500 and await resp.json() == data


async def test_post_without_wait_answers_202_and_checks_parameters(bridge_factory: Any, tmp_path: Path,
                                                                   comfy_double: Any) -> None:
    client = await client_for(bridge_factory, tmp_path)
    before = len(comfy_double.prompts)
    for body, field in (({"parameters": {"width": 4, "height": 4}}, "sketch"),
                        ({"parameters": {"sketch": "eA==", "widht": 4}}, "widht"),
                        ({"parameters": {"sketch": "eA==", "width": 0}}, "width"),
                        ({"parameters": {"sketch": "eA==", "dither": "sparkle"}}, "dither"),
                        ({"parameters": {"sketch": solid_png_b64(8, 8, (0, 0, 0))}, "outputs": ["gif"]}, "outputs"),
                        ({"parameters": [1]}, "parameters"), ({"params": {}}, "params")):
        resp = await client.post("/workflows/my_pixels", json=body)
        data = await resp.json()
        assert resp.status == 400 and data["field"] == field and field in data["error"], (body, data)
    assert len(comfy_double.prompts) == before  # nothing reached ComfyUI
    resp = await client.post("/workflows/my_pixels",
                             json={"parameters": {"sketch": solid_png_b64(8, 8, (0, 0, 0)), "width": 2, "height": 2}})
    accepted = await resp.json()
    assert resp.status == 202 and accepted["status"] == "queued" and accepted["type"] == "my_pixels"
    done = await (await client.get(f"/jobs/{accepted['id']}")).json()
    assert done["id"] == accepted["id"]


async def test_reload_serves_a_workflow_dropped_in_later(bridge_factory: Any, tmp_path: Path) -> None:
    client = await client_for(bridge_factory, tmp_path)
    assert (await client.get("/workflows/late_arrival")).status == 404
    spec = await (await client.get("/openapi.json")).json()
    assert "/workflows/my_pixels" in spec["paths"] and "/workflows/late_arrival" not in spec["paths"]
    shared_workflow(tmp_path / "shared", "late_arrival")
    resp = await client.post("/workflows/reload")
    assert resp.status == 200 and "late_arrival" in (await resp.json())["workflows"]
    assert (await client.get("/workflows/late_arrival")).status == 200
    spec = await (await client.get("/openapi.json")).json()
    assert "/workflows/late_arrival" in spec["paths"]
    # A broken drop-in is refused by name and the served set stays as it was.
    (tmp_path / "shared" / "broken.manifest.json").write_text('{"name": "broken"}')
    resp = await client.post("/workflows/reload")
    data = await resp.json()
    assert resp.status == 422 and "broken" in data["error"]
    assert (await client.get("/workflows/late_arrival")).status == 200


async def test_a_reload_refuses_an_unreadable_drop_in_by_name(bridge_factory: Any, tmp_path: Path) -> None:
    # an int of 5000 digits raised a ValueError, not a WorkflowError: the reload was a 500 naming nothing
    client = await client_for(bridge_factory, tmp_path)
    shared_workflow(tmp_path / "shared", "huge_int")
    graph = tmp_path / "shared" / "huge_int.json"
    graph.write_text(graph.read_text().replace("{", '{"9": ' + "9" * 5000 + ", ", 1))
    resp = await client.post("/workflows/reload")
    data = await resp.json()
    assert resp.status == 422 and data["field"] == "workflows", data
    assert data["error"].startswith("workflow huge_int: cannot read graph 'huge_int.json': Exceeds the limit")
    assert (await client.get("/workflows/my_pixels")).status == 200


async def test_reload_reads_the_folders_off_the_event_loop_once_for_the_calls_that_wait(
        bridge_factory: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """The folders are read in a thread (the 15 shipped workflows held the event loop 0.3-0.56 s a reload, and any
    client could ask again and again), one reload at a time: /health answers while one reads, and the calls that
    come while one reads share the next read (each read one after the other: nine calls read the folders nine
    times)."""
    import asyncio
    import threading

    from bridge import workflows as wfmod
    from bridge.keys import ENGINE

    client = await client_for(bridge_factory, tmp_path)
    engine = client.server.app[ENGINE]
    loop_thread, read_in, reading, release = threading.current_thread(), [], [0], threading.Event()
    real, calls = wfmod.load_workflows, [0]

    def load(*args: Any) -> Any:
        read_in.append(threading.current_thread())
        reading[0] += 1
        try:
            assert reading[0] == 1, "two reloads read the folders at once"
            release.wait(30)
            return real(*args)
        finally:
            reading[0] -= 1

    def counted(method: Any) -> Any:
        async def call() -> list[str]:
            calls[0] += 1
            return await method()
        return call

    monkeypatch.setattr(wfmod, "load_workflows", load)
    monkeypatch.setattr(engine, "reload_workflows", counted(engine.reload_workflows))
    first = asyncio.ensure_future(client.post("/workflows/reload"))
    await until(lambda: read_in, 10, "the first reload reading")
    assert (await client.get("/health")).status == 200  # the loop is free while the folders are read
    later = [asyncio.ensure_future(client.post("/workflows/reload")) for _ in range(8)]
    await until(lambda: calls[0] == 9, 10, "the later reloads asked")
    release.set()
    answers = await asyncio.gather(first, *later)
    assert [r.status for r in answers] == [200] * 9
    assert len(read_in) == 2 and loop_thread not in read_in
    assert all(["my_pixels" in (await r.json())["workflows"] for r in answers])


async def test_openapi_has_one_typed_path_per_workflow(bridge_factory: Any, tmp_path: Path) -> None:
    client = await client_for(bridge_factory, tmp_path)
    spec = await (await client.get("/openapi.json")).json()
    engine_names = sorted(W.load_workflows(W.DEFAULT_WORKFLOWS_DIR)) + ["my_pixels"]
    for name in engine_names:
        op = spec["paths"][f"/workflows/{name}"]["post"]
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        body = spec["components"]["schemas"][ref]
        params_ref = body["properties"]["parameters"]["$ref"].rsplit("/", 1)[-1]
        params = spec["components"]["schemas"][params_ref]
        assert set(params["properties"]) == set(W.load_workflows(W.DEFAULT_WORKFLOWS_DIR, [tmp_path / "shared"])
                                                [name].parameters)
    width = spec["components"]["schemas"]["Txt2imgParameters"]["properties"]["width"]
    assert (width["minimum"], width["maximum"], width["multipleOf"]) == (64, 2048, 8)
    assert "/workflows/{name}" in spec["paths"] and "post" not in spec["paths"]["/workflows/{name}"]


async def test_a_pattern_in_a_shared_manifest_checks_requests_and_shows_in_the_openapi(
        bridge_factory: Any, tmp_path: Path, comfy_double: Any) -> None:
    # a shared workflow restricts a text to names with no Python: here the palette's name (a choice of the backend's
    # list otherwise), and the Axera workflows' model_dir to a sub-folder of the model folders
    folder = shared_workflow(tmp_path / "shared")
    m = json.loads((folder / "my_pixels.manifest.json").read_text())
    m["parameters"]["palette_name"].update(type="string", pattern="^[a-z0-9-]+$")
    (folder / "my_pixels.manifest.json").write_text(json.dumps(m))
    client = await bridge_factory(adapters=["jobs_api"], extra_workflows_dirs=[str(folder)])
    spec = await (await client.get("/openapi.json")).json()
    assert spec["components"]["schemas"]["MyPixelsParameters"]["properties"]["palette_name"]["pattern"] == \
        "^[a-z0-9-]+$"
    model_dir = spec["components"]["schemas"]["AxeraTxt2imgParameters"]["properties"]["model_dir"]
    assert model_dir["pattern"].startswith("^") and model_dir["maxLength"] == 255
    before = len(comfy_double.prompts)
    sketch = solid_png_b64(8, 8, (0, 0, 0))
    for name, params in (("my_pixels", {"sketch": sketch, "palette_name": "PICO 8"}),
                         ("my_pixels", {"sketch": sketch, "palette_name": "pico-8\n"}),
                         *(("axera_txt2img", {"prompt": "a cat", "model_dir": bad})
                           for bad in ("/etc", "../secrets", "lcm/../../etc", "~root", "lcm512/", "./lcm512"))):
        resp = await client.post(f"/workflows/{name}", json={"parameters": params})
        data = await resp.json()
        field = next(k for k in params if k != "sketch" and k != "prompt")
        assert resp.status == 400 and data["field"] == field and "must match the pattern" in data["error"], data
    assert len(comfy_double.prompts) == before  # nothing reached ComfyUI
    for name, params in (("my_pixels", {"sketch": sketch, "palette_name": "pico-8"}),
                         ("axera_txt2img", {"prompt": "a cat", "model_dir": "builds/lcm-1024x768"}),
                         ("axera_txt2img", {"prompt": "a cat"})):
        resp = await client.post(f"/workflows/{name}", json={"parameters": params})
        assert resp.status == 202, await resp.json()


async def test_pixel_art_indexed_output_carries_the_requested_palette_in_order(bridge_factory: Any) -> None:
    import base64
    import io

    from PIL import Image

    client = await bridge_factory(adapters=["jobs_api"])
    colours = ["#ff0000", "#0000ff", "#00ff00", "#101010"]  # not sorted: the order is the artist's
    resp = await client.post("/workflows/pixel_art?wait=30", json={"parameters": {
        "sketch": solid_png_b64(32, 32), "width": 16, "height": 16, "palette_source": "hex",
        "palette_hex": " ".join(colours)}, "outputs": ["indexed"]})
    job = await resp.json()
    assert resp.status == 200 and job["status"] == "completed", job
    data = base64.b64decode(job["result"]["outputs"]["indexed"][0].split(",", 1)[1])
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and im.mode == "P"
        assert im.getpalette() == [v for c in colours for v in bytes.fromhex(c[1:])]
