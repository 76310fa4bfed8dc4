"""The manifest model and its published schema, the editor format both ways, and drafting a manifest (`new`)."""
from __future__ import annotations

import copy
import io
import json
import zlib
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from bridge import workflows as W
from bridge.errors import InvalidParameter, WorkflowError
from bridge.workflows.draft import draft_manifest, read_workflow_file
from bridge.workflows.manifest import json_schema_text
from tests.support.double import object_info_for

OI = object_info_for(["tiny.safetensors", "other.safetensors"], ["example.png"])


@pytest.fixture(scope="module")
def workflows() -> dict[str, W.Workflow]:
    return W.load_workflows(W.DEFAULT_WORKFLOWS_DIR)


def test_published_schema_is_generated_from_the_model() -> None:
    assert W.SCHEMA_FILE.read_text() == json_schema_text(), "run: python -m bridge.workflows schema"
    assert W.main(["schema", "--check"]) == 0


def test_every_shipped_manifest_validates_against_the_published_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(W.SCHEMA_FILE.read_text())
    for path in sorted(W.DEFAULT_WORKFLOWS_DIR.glob("*.manifest.json")):
        jsonschema.validate(json.loads(path.read_text()), schema)
    bad = json.loads((W.DEFAULT_WORKFLOWS_DIR / "txt2img.manifest.json").read_text())
    bad["parameters"]["steps"]["defualt"] = 3  # a typo the bridge refuses must be refused by editors too
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_misspelt_manifest_key_is_refused_naming_it(tmp_path: Path) -> None:
    for name in ("txt2img.json", "txt2img.manifest.json"):
        (tmp_path / name).write_text((W.DEFAULT_WORKFLOWS_DIR / name).read_text())
    m = json.loads((tmp_path / "txt2img.manifest.json").read_text())
    m["parameters"]["steps"]["defualt"] = 3
    (tmp_path / "txt2img.manifest.json").write_text(json.dumps(m))
    with pytest.raises(WorkflowError) as e:
        W.load_workflow(tmp_path / "txt2img.manifest.json")
    assert "parameter 'steps'" in e.value.message and "defualt" in e.value.message


def test_graph_file_must_sit_beside_the_manifest(tmp_path: Path) -> None:
    m = json.loads((W.DEFAULT_WORKFLOWS_DIR / "txt2img.manifest.json").read_text())
    m["workflow"] = "../txt2img.json"
    (tmp_path / "x.manifest.json").write_text(json.dumps(m))
    with pytest.raises(WorkflowError, match="beside the manifest"):
        W.load_workflow(tmp_path / "x.manifest.json")


@pytest.mark.parametrize("name", ["txt2img", "img2img", "inpaint", "pixel_art", "pixel_art_ai", "pico_rgb565",
                                  "aleaart"])
def test_editor_format_round_trips_to_the_same_api_graph(workflows: dict[str, W.Workflow], name: str) -> None:
    wf = workflows[name]
    ui = W.export_editor(wf, OI)
    graph = W.editor_to_api(ui, OI)
    expected = {nid: {"class_type": n["class_type"], "inputs": n["inputs"]} for nid, n in wf.graph.items()}
    got = {nid: {"class_type": n["class_type"], "inputs": n["inputs"]} for nid, n in graph.items()}
    assert got == expected


def test_editor_reroutes_primitives_notes_and_muted_nodes(workflows: dict[str, W.Workflow]) -> None:
    ui = W.export_editor(workflows["txt2img"], OI)
    sampler = next(n for n in ui["nodes"] if n["type"] == "KSampler")
    # A reroute between the checkpoint's MODEL and the sampler, a primitive driving the seed, a note, a muted node.
    model_slot = next(i for i, inp in enumerate(sampler["inputs"]) if inp["name"] == "model")
    old_link = sampler["inputs"][model_slot]["link"]
    row = next(r for r in ui["links"] if r[0] == old_link)
    ui["nodes"].append({"id": 90, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 900}],
                        "outputs": [{"name": "", "type": "MODEL", "links": [901]}], "widgets_values": []})
    ui["links"] += [[900, row[1], row[2], 90, 0, "MODEL"], [901, 90, 0, sampler["id"], model_slot, "MODEL"]]
    sampler["inputs"][model_slot]["link"] = 901
    sampler["inputs"].append({"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 902})
    ui["nodes"].append({"id": 91, "type": "PrimitiveNode", "mode": 0, "inputs": [],
                        "outputs": [{"name": "INT", "type": "INT", "links": [902]}],
                        "widgets_values": [424242, "fixed"]})
    ui["links"].append([902, 91, 0, sampler["id"], len(sampler["inputs"]) - 1, "INT"])
    ui["nodes"].append({"id": 92, "type": "Note", "mode": 0, "inputs": [], "outputs": [], "widgets_values": ["hi"]})
    ui["nodes"].append({"id": 93, "type": "VAEDecode", "mode": 2, "inputs": [], "outputs": [], "widgets_values": []})
    graph = W.editor_to_api(ui, OI)
    ksampler = next(n for n in graph.values() if n["class_type"] == "KSampler")
    assert ksampler["inputs"]["model"] == [str(row[1]), row[2]]
    assert ksampler["inputs"]["seed"] == 424242
    assert set(graph) == set(workflows["txt2img"].graph)


def test_a_long_reroute_chain_is_followed_without_recursion(workflows: dict[str, W.Workflow]) -> None:
    # Each reroute was one Python call deeper: a chain of a few hundred (or bypassed nodes in a row) was refused as
    # "not a workflow this can read (RecursionError ...)" and each hop copied the set of nodes seen so far.
    ui = W.export_editor(workflows["txt2img"], OI)
    sampler = next(n for n in ui["nodes"] if n["type"] == "KSampler")
    model_slot = next(i for i, inp in enumerate(sampler["inputs"]) if inp["name"] == "model")
    row = next(r for r in ui["links"] if r[0] == sampler["inputs"][model_slot]["link"])
    n = 5000
    prev = (row[1], row[2])
    for i in range(n):
        nid, link = 1000 + i, 10_000 + i
        ui["nodes"].append({"id": nid, "type": "Reroute", "mode": 0,
                            "inputs": [{"name": "", "type": "*", "link": link}],
                            "outputs": [{"name": "", "type": "MODEL", "links": [link + 1]}]})
        ui["links"].append([link, prev[0], prev[1], nid, 0, "MODEL"])
        prev = (nid, 0)
    ui["links"].append([10_000 + n, prev[0], 0, sampler["id"], model_slot, "MODEL"])
    sampler["inputs"][model_slot]["link"] = 10_000 + n
    graph = W.editor_to_api(ui, OI)
    assert next(g for g in graph.values() if g["class_type"] == "KSampler")["inputs"]["model"] == [str(row[1]), row[2]]
    # a chain that loops back on itself leads nowhere, as before
    ui["links"][-n - 1][1:3] = [1000 + n - 1, 0]
    graph = W.editor_to_api(ui, OI)
    assert "model" not in next(g for g in graph.values() if g["class_type"] == "KSampler")["inputs"]


def test_unknown_nodes_are_refused_clearly(workflows: dict[str, W.Workflow]) -> None:
    ui = W.export_editor(workflows["txt2img"], OI)
    # a subgraph no node uses changes nothing (test_workflow_files has subgraphs in use)
    def kinds(graph: dict) -> list:
        return sorted((n["class_type"], repr(sorted((k, v) for k, v in n["inputs"].items() if not W.is_link(v))))
                      for n in graph.values())
    assert kinds(W.editor_to_api({**ui, "definitions": {"subgraphs": [{"id": "x"}]}}, OI)) == \
        kinds(W.editor_to_api(ui, OI))
    odd = copy.deepcopy(ui)
    odd["nodes"][0]["type"] = "SomeoneElsesNode"
    with pytest.raises(WorkflowError, match="SomeoneElsesNode"):
        W.editor_to_api(odd, OI)


def test_draft_manifest_from_an_api_graph_is_served_as_is(tmp_path: Path, workflows: dict[str, W.Workflow]) -> None:
    graph = copy.deepcopy(workflows["img2img"].graph)
    graph["4"]["inputs"]["ckpt_name"] = "tiny.safetensors"  # a model the backend has
    src = tmp_path / "mine_api.json"
    src.write_text(json.dumps(graph))
    oi = tmp_path / "oi.json"
    oi.write_text(json.dumps(OI))
    out = tmp_path / "served"
    assert W.main(["new", str(src), "--name", "mine", "--object-info", str(oi), "--out", str(out),
                   "--nodes", "KSampler", "EmptyLatentImage", "ImageScale"]) == 0
    wf = W.load_workflow(out / "mine.manifest.json")
    assert wf.graph == graph
    assert wf.parameters["image"].type == "image" and wf.parameters["image"].required
    seed = wf.parameters["seed"]
    assert (seed.type, seed.random_value, seed.min) == ("int", -1, 0)
    assert wf.parameters["steps"].default == graph["3"]["inputs"]["steps"]
    assert wf.parameters["sampler_name"].choices_from == "KSampler.sampler_name"
    assert wf.parameters["cfg"].max == OI["KSampler"]["input"]["required"]["cfg"][1]["max"]
    assert list(wf.outputs) == ["images"]
    values = wf.coerce({"image": "eA==", "steps": 3})
    assert values["steps"] == 3 and 0 <= values["seed"] < 2**32
    with pytest.raises(InvalidParameter) as e:
        wf.coerce({"image": "eA==", "steps": 0})
    assert e.value.field == "steps"
    assert W.check_object_info(wf, OI) == []
    # The second run refuses to overwrite without --force.
    assert W.main(["new", str(src), "--name", "mine", "--object-info", str(oi), "--out", str(out)]) == 1
    assert W.main(["new", str(src), "--name", "mine", "--object-info", str(oi), "--out", str(out), "--force"]) == 0


def test_draft_reads_editor_files_and_comfyui_pngs(tmp_path: Path, workflows: dict[str, W.Workflow]) -> None:
    ui = W.export_editor(workflows["txt2img"], OI)
    editor_file = tmp_path / "tuned.json"
    editor_file.write_text(json.dumps(ui))
    with pytest.raises(WorkflowError, match="editor format"):
        read_workflow_file(editor_file, None)
    assert read_workflow_file(editor_file, OI)["3"]["class_type"] == "KSampler"
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(workflows["txt2img"].graph))
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG", pnginfo=info)
    png = tmp_path / "ComfyUI_00001_.png"
    png.write_bytes(buf.getvalue())
    graph, manifest = draft_manifest(read_workflow_file(png, OI), OI, name="from_png")
    assert graph == workflows["txt2img"].graph and manifest["outputs"] == {"images": {"node": "9", "type": "images"}}
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    with pytest.raises(WorkflowError, match="no ComfyUI workflow"):
        read_workflow_file(plain, OI)


def _png(width: int, height: int, *chunks: tuple[bytes, bytes], idat: bytes = b"") -> bytes:
    """A PNG made chunk by chunk: a header that says any size, these chunks before the image data, any data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 6, 0, 0, 0])  # 8-bit RGBA
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + b"".join(chunk(k, b) for k, b in chunks)
            + chunk(b"IDAT", idat or zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_a_comfyui_png_is_read_for_its_text_never_its_pixels(tmp_path: Path, workflows: dict[str, W.Workflow],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Reading the chunks through Pillow's `text` decoded the whole picture: a 79 KB PNG whose header said 9000 x 9000
    # took 82 MB (13000 x 13000 RGBA: 680 MB); one past Pillow's bomb limit, or pixels that do not decode, a traceback.
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("the pixels were decoded"))
    graph = json.dumps(workflows["txt2img"].graph)
    cases = {
        "huge.png": _png(20_000, 20_000, (b"tEXt", b"prompt\0" + graph.encode("latin-1"))),
        "broken_pixels.png": _png(4, 4, (b"tEXt", b"prompt\0" + graph.encode("latin-1")), idat=b"not zlib"),
        "ztxt.png": _png(64, 64, (b"zTXt", b"prompt\0\0" + zlib.compress(graph.encode("latin-1")))),
        "itxt.png": _png(64, 64, (b"iTXt", b"prompt\0\1\0\0\0" + zlib.compress(graph.encode()))),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert read_workflow_file(tmp_path / name, OI) == workflows["txt2img"].graph, name
    # a compressed text that would unpack past any workflow's size is refused, not unpacked
    bomb = zlib.compress(b" " * (200 * 2**20), 9)
    (tmp_path / "text_bomb.png").write_bytes(_png(4, 4, (b"zTXt", b"prompt\0\0" + bomb)))
    with pytest.raises(WorkflowError, match="text_bomb.png: .*more than 64 MiB"):
        read_workflow_file(tmp_path / "text_bomb.png", OI)
    # nor do many, together: each of 6 chunks of 32 MiB (a 196 KB file) was unpacked and kept, 237 MiB at the peak;
    # a chunk of another key is skipped unread
    half = zlib.compress(b" " * (32 * 2**20), 9)
    many = [(b"zTXt", b"prompt\0\0" + half)] * 2 + [(b"zTXt", b"workflow\0\0" + half)]
    (tmp_path / "many.png").write_bytes(_png(4, 4, *many))
    with pytest.raises(WorkflowError, match="many.png: .*more than 64 MiB"):
        read_workflow_file(tmp_path / "many.png", OI)
    other = [(b"zTXt", b"other\0\0not zlib"), (b"tEXt", b"prompt\0" + graph.encode("latin-1"))]
    (tmp_path / "other.png").write_bytes(_png(4, 4, *other))
    assert read_workflow_file(tmp_path / "other.png", OI) == workflows["txt2img"].graph
    (tmp_path / "bad_text.png").write_bytes(_png(4, 4, (b"zTXt", b"prompt\0\0not zlib")))
    with pytest.raises(WorkflowError, match="bad_text.png: a text chunk does not unpack"):
        read_workflow_file(tmp_path / "bad_text.png", OI)


def test_draft_needs_an_image_saving_node(workflows: dict[str, W.Workflow]) -> None:
    graph = {k: v for k, v in workflows["txt2img"].graph.items() if v["class_type"] != "SaveImage"}
    with pytest.raises(WorkflowError, match="no image-saving node"):
        draft_manifest(graph, OI, name="nothing_out")


def test_the_workflows_readme_documents_every_manifest_field():
    """workflows/README.md is where people read the format: every key the model takes is named there."""
    from bridge.workflows.manifest import Manifest, Output, Parameter, Rewire, Target

    readme = (Path(__file__).resolve().parents[1] / "workflows" / "README.md").read_text()
    for model in (Manifest, Parameter, Output, Target, Rewire):
        for name, info in model.model_fields.items():
            if info.exclude:
                continue  # set by the loader, not written in files
            assert f"`{name}`" in readme, f"{model.__name__}.{name} is not documented in workflows/README.md"
    kinds = Parameter.model_fields["type"].annotation.__args__  # the Literal's values
    for kind in kinds:
        assert f"`{kind}`" in readme, f"parameter type {kind!r} is not documented"


def test_editor_workflow_saved_before_a_widget_was_added_takes_its_default(workflows: dict[str, W.Workflow]) -> None:
    """New widgets go last (PixartPalette's for_dithering came after search): a workflow saved without them keeps
    every earlier value in place and gets the new widget's default."""
    ui = W.export_editor(workflows["pixel_art"], OI)
    node = next(n for n in ui["nodes"] if n["type"] == "PixartPalette")
    assert node["widgets_values"][-2:] == ["", False]
    node["widgets_values"] = node["widgets_values"][:-1]
    inputs = W.editor_to_api(ui, OI)[str(node["id"])]["inputs"]
    assert inputs == workflows["pixel_art"].graph[str(node["id"])]["inputs"]
    assert inputs["search"] == "" and inputs["for_dithering"] is False


def _renamed(graph: dict, old: str, new: str) -> dict:
    """The graph with node `old` called `new`, links following."""
    out = {}
    for nid, node in graph.items():
        node = copy.deepcopy(node)
        for name, value in node["inputs"].items():
            if W.is_link(value) and value[0] == old:
                node["inputs"][name] = [new, value[1]]
        out[new if nid == old else nid] = node
    return out


@pytest.mark.parametrize("odd", ["²", "٣", "9" * 5000, "1" * 16])
def test_node_ids_int_cannot_read_are_a_problem_not_a_crash(tmp_path: Path, workflows: dict[str, W.Workflow],
                                                            odd: str) -> None:
    # "²" passes str.isdigit() but not int(); "٣" passes int() (3) but the editor format wants ASCII; int() refuses
    # 4300 digits or more; JavaScript numbers are exact to 15 digits.
    graph = _renamed(workflows["txt2img"].graph, "5", odd)  # EmptyLatentImage: no parameter targets it by id
    (tmp_path / "odd.json").write_text(json.dumps(graph))
    manifest = json.loads(workflows["txt2img"].path.read_text())
    (tmp_path / "odd.manifest.json").write_text(json.dumps({**manifest, "name": "odd", "workflow": "odd.json"}))
    with pytest.raises(WorkflowError, match="ids must be decimal integers of at most 15 digits") as e:
        W.load_workflows(tmp_path)
    assert len(e.value.message) < 2000  # the id is cut short in the message
    # Drafting renumbers such a graph instead (the manifest format needs decimal ids).
    drafted, _ = draft_manifest(graph, OI, name="odd")
    assert all(W.node_number(n) is not None for n in drafted) and len(drafted) == len(graph)
    assert W.topological(graph)  # ordering does not need them to be numbers


@pytest.mark.parametrize("text", [
    "{not json",
    json.dumps({"nodes": [{"id": "x", "type": "KSampler"}], "links": []}),
    json.dumps({"nodes": [{"id": 1, "type": "KSampler", "inputs": [], "widgets_values": []}], "links": [[1, 2]]}),
    # API-format nodes of odd shapes, and nesting deeper than Python recurses: tracebacks before
    json.dumps({"1": {"class_type": "KSampler"}}),
    json.dumps({"1": {"class_type": "KSampler", "inputs": []}}),
    json.dumps({"1": {"class_type": "KSampler", "inputs": {}, "_meta": "x"}}),
    "[" * 50_000 + "]" * 50_000,
    # JSON's Infinity as a node or link id: int() raised OverflowError, a traceback
    '{"nodes": [{"id": Infinity, "type": "KSampler", "inputs": [], "widgets_values": []}], "links": []}',
    '{"nodes": [{"id": 1, "type": "KSampler", "inputs": [], "widgets_values": []}], "links": [[-Infinity, 1, 0]]}',
])
def test_a_malformed_workflow_file_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        text: str) -> None:
    src = tmp_path / "shared.json"
    src.write_text(text)
    oi = tmp_path / "oi.json"
    oi.write_text(json.dumps(OI))
    assert W.main(["new", str(src), "--name", "shared", "--object-info", str(oi), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("shared.json:") and err.count("\n") == 1, err


def test_draft_takes_what_comfyui_runs(tmp_path: Path, workflows: dict[str, W.Workflow]) -> None:
    # numbers stored as text, a width off the node's step, a text longer than requests may send, inputs named in
    # another script (each became "value", one overwriting another), a custom node's infinite limits
    graph = copy.deepcopy(workflows["txt2img"].graph)
    graph["3"]["inputs"].update(steps="20", cfg="7.5")
    graph["5"]["inputs"]["width"] = 500
    graph["6"]["inputs"]["text"] = "a lighthouse, " * 1000
    graph["20"] = {"class_type": "CJKScale", "inputs": {"\u5bbd\u5ea6": 2, "\u9ad8\u5ea6": 3, "\u7f29\u653e": 1.5,
                                                       "image": ["8", 0], "factor": 2}}
    oi = copy.deepcopy(OI)
    oi["CJKScale"] = {"input": {"required": {"\u5bbd\u5ea6": ["INT", {"min": 1, "max": float("inf")}],
                                             "\u9ad8\u5ea6": ["INT", {"min": -float("inf"), "max": 64}],
                                             "\u7f29\u653e": ["FLOAT", {"min": 0.0, "max": float("inf")}],
                                             "image": ["IMAGE", {}], "factor": [[1, 2, 4], {}]}},
                      "output": ["IMAGE"], "output_name": ["IMAGE"], "name": "CJKScale", "output_node": False}
    src, oi_file, out = tmp_path / "shared.json", tmp_path / "oi.json", tmp_path / "served"
    src.write_text(json.dumps(graph))
    oi_file.write_text(json.dumps(oi))
    assert W.main(["new", str(src), "--name", "mine", "--object-info", str(oi_file), "--out", str(out)]) == 0
    text = (out / "mine.manifest.json").read_text()
    assert "Infinity" not in text
    wf = W.load_workflow(out / "mine.manifest.json")
    p = wf.parameters
    assert (p["steps"].default, p["cfg"].default) == (20, 7.5)
    assert p["width"].default == 500 and p["width"].multiple_of is None and p["height"].multiple_of == 8
    assert p["prompt"].default == graph["6"]["inputs"]["text"] and p["prompt"].max_length == len(p["prompt"].default)
    cjk = [n for n in p if p[n].targets[0].node == "20" and n != "factor"]
    assert len(cjk) == 3 and len(set(cjk)) == 3
    assert {p[n].targets[0].input: p[n].default for n in cjk} == {"\u5bbd\u5ea6": 2, "\u9ad8\u5ea6": 3, "\u7f29\u653e": 1.5}
    assert [(p[n].min, p[n].max) for n in cjk] == [(1, None), (None, 64), (0.0, None)]
    # a list of numbers: the value a number, checked against the backend's list when bound
    assert p["factor"].choices_from == "CJKScale.factor" and wf.coerce({"factor": 4})["factor"] == 4
    for wrong in ("4", True):
        with pytest.raises(InvalidParameter):
            wf.coerce({"factor": wrong})
    assert wf.bind(wf.coerce({"factor": 4}), lambda ref: [1, 2, 4] if ref == "CJKScale.factor" else None)["20"]["inputs"]["factor"] == 4
    with pytest.raises(InvalidParameter, match="factor: 3 is not available"):
        wf.bind(wf.coerce({"factor": 3}), lambda ref: [1, 2, 4] if ref == "CJKScale.factor" else None)


def test_a_model_the_backend_lacks_is_a_problem_before_any_job(tmp_path: Path, workflows: dict[str, W.Workflow],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # ComfyUI refuses every job naming it ("value not in list"); the checks said nothing and each job failed. A
    # node no output reads is never checked by ComfyUI: neither here.
    graph = copy.deepcopy(workflows["txt2img"].graph)
    graph["30"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "unused.safetensors"}}
    src, oi = tmp_path / "shared.json", tmp_path / "oi.json"
    src.write_text(json.dumps(graph))
    oi.write_text(json.dumps(OI))
    assert W.main(["new", str(src), "--name", "shared", "--object-info", str(oi), "--out", str(tmp_path / "out"),
                   "--nodes", "KSampler"]) == 1
    err = capsys.readouterr().err
    assert "node 4 (CheckpointLoaderSimple): input 'ckpt_name' is 'v1-5-pruned-emaonly.safetensors', which the " \
           "backend does not offer (it has tiny.safetensors, other.safetensors)" in err
    wf = W.load_workflow(tmp_path / "out" / "shared.manifest.json")
    assert [p for p in W.check_object_info(wf, OI) if "ckpt_name" in p] == [err.splitlines()[0]]
    assert "unused" not in err
    assert not [p for p in W.check_object_info(workflows["txt2img"], OI) if "ckpt_name" in p]  # a parameter's
