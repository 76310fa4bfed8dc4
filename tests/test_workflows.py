"""Workflow manifests: loading, static checks, binding by name, /object_info checks, editor export."""
from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest

from bridge import workflows as W
from bridge.errors import InvalidParameter, WorkflowError, WorkflowNotFound
from tests.support.double import object_info_for

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
EDITOR = ROOT / "custom_nodes" / "pixart_nodes" / "example_workflows"
CORE = ("txt2img", "img2img", "inpaint")
COMMON = {"prompt", "negative_prompt", "seed", "steps", "cfg", "sampler", "scheduler", "width", "height",
          "batch_size", "checkpoint"}
OI = object_info_for(["tiny.safetensors"], ["example.png"])


@pytest.fixture(scope="module")
def workflows() -> dict[str, W.Workflow]:
    return W.load_workflows(WORKFLOWS)


def copy_core(tmp_path: Path) -> Path:
    for name in CORE:
        shutil.copy(WORKFLOWS / f"{name}.json", tmp_path)
        shutil.copy(WORKFLOWS / f"{name}.manifest.json", tmp_path)
    return tmp_path


def edit_manifest(folder: Path, name: str, fn) -> None:
    path = folder / f"{name}.manifest.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_every_shipped_workflow_loads(workflows):
    assert set(CORE) <= set(workflows)
    for name in CORE:
        wf = workflows[name]
        assert COMMON <= set(wf.parameters), name
        assert wf.version >= 1 and wf.description
        assert wf.outputs["images"].type == "images"
    assert {"denoise", "resize_mode", "image"} <= set(workflows["img2img"].parameters)
    assert {"denoise", "resize_mode", "image", "mask"} <= set(workflows["inpaint"].parameters)
    assert workflows["inpaint"].parameters["mask"].required


def test_core_workflows_match_the_object_info(workflows):
    for name in CORE:
        assert W.check_object_info(workflows[name], OI) == []


def test_a_link_to_a_negative_output_is_refused():
    # ComfyUI reads output -1 as the node's last (a Python index) and the editor export wrote a link to slot -1
    graph = {"1": {"class_type": "A", "inputs": {}}, "2": {"class_type": "B", "inputs": {"x": ["1", -1]}}}
    assert W.check_graph(graph) == ["node 2 (B) input 'x' links to output -1 of node '1': outputs count from 0"]
    graph["2"]["inputs"]["x"] = ["1", 0]
    assert W.check_graph(graph) == []


def test_a_map_to_a_negative_output_is_refused(tmp_path):
    folder = copy_core(tmp_path)
    edit_manifest(folder, "img2img", lambda m: m["parameters"]["resize_mode"]["targets"][0]["map"].__setitem__(
        "just resize", ["11", -1]))
    with pytest.raises(WorkflowError, match="'resize_mode' maps to output -1 of node '11': outputs count from 0"):
        W.load_workflows(folder)


def test_static_errors_name_workflow_and_node(tmp_path):
    folder = copy_core(tmp_path)
    edit_manifest(folder, "txt2img", lambda m: m["parameters"]["steps"]["targets"].__setitem__(
        0, {"node": "99", "input": "steps"}))
    edit_manifest(folder, "img2img", lambda m: m["parameters"]["cfg"]["targets"].__setitem__(
        0, {"node": "3", "input": "cfgg"}))
    edit_manifest(folder, "inpaint", lambda m: m["parameters"]["resize_mode"]["targets"][0]["map"].pop("just resize"))
    with pytest.raises(WorkflowError) as e:
        W.load_workflows(folder)
    text = e.value.message
    assert "workflow txt2img" in text and "missing node '99'" in text
    assert "workflow img2img" in text and "node 3 (KSampler)" in text and "'cfgg'" in text
    assert "workflow inpaint" in text and "'map' keys must equal 'choices'" in text


@pytest.mark.parametrize("change,needle", [
    (lambda m: m.__setitem__("version", "1"), "'version' must be a positive integer"),
    (lambda m: m["parameters"]["steps"].__setitem__("default", 0), "default is invalid"),
    (lambda m: m["parameters"]["steps"].__setitem__("type", "number"), "type must be one of"),
    (lambda m: m["outputs"].__setitem__("images", {"node": "9", "type": "pictures"}), "output 'images'"),
    (lambda m: m["outputs"].__setitem__("images", {"node": "77", "type": "images"}), "missing node '77'"),
    # each of these loaded, then failed every request to the workflow (and /openapi.json) with a 500
    (lambda m: m["parameters"]["sampler"].update(choices=[], choices_from=None), "at least 1 item"),
    (lambda m: m["parameters"]["cfg"].__setitem__("max", float("inf")), "finite number"),
    (lambda m: m["parameters"]["steps"].__setitem__("min", float("nan")), "finite number"),
    (lambda m: m["parameters"]["clip_skip"].__setitem__("min", 10**400), "finite number"),
    (lambda m: m["parameters"]["steps"].update(min=30, max=20), "'min' (30) is more than 'max' (20)"),
    (lambda m: m["parameters"]["cfg"].__setitem__("multiple_of", 2), "'multiple_of' applies to int"),
    (lambda m: m["parameters"]["prompt"].__setitem__("min", 1), "'min' applies to int and float"),
    (lambda m: m.__setitem__("cost", ["width", "width"]), "listed twice"),
    (lambda m: m.__setitem__("cost", "width * prompt"), "'prompt' is not a number parameter"),
    (lambda m: m.__setitem__("cost", "width * nope"), "'nope' is not a number parameter"),
    (lambda m: m.__setitem__("cost", "__import__('os').getpid()"), "may hold numbers"),
    (lambda m: m.__setitem__("cost", "width ** 99999"), "may hold numbers"),  # a power could take any time
    (lambda m: m.__setitem__("cost", "width.real"), "may hold numbers"),
    (lambda m: m.__setitem__("cost", "ceil(width, height)"), "may hold numbers"),
    (lambda m: m.__setitem__("cost", "width *"), "is not a formula"),
    (lambda m: m.__setitem__("checks", [{"rule": "width - height", "field": "width", "message": "x"}]),
     "must compare two formulas"),
    (lambda m: m.__setitem__("checks", [{"rule": "width <= nope", "field": "width", "message": "x"}]),
     "checks[0]: 'nope' is not a number parameter"),
    (lambda m: m.__setitem__("checks", [{"rule": "width <= height", "field": "wdith", "message": "x"}]),
     "field 'wdith' is not a parameter"),
    (lambda m: m.__setitem__("cost", "width * 1e400"), "out of range"),  # loaded, then a 500 at each request
    (lambda m: m.__setitem__("cost", "-" * 40 + "width"), "nests deeper"),
    (lambda m: (m.__setitem__("cost", "width * clip_skip"), m["parameters"]["clip_skip"].pop("default")),
     "'clip_skip' needs a default"),
    (lambda m: m.__setitem__("cost", "prompt.width * steps"), "'prompt' is not an image parameter"),
    (lambda m: m.__setitem__("cost", "width.height"), "'width' is not an image parameter"),
    (lambda m: m.__setitem__("cost", "steps.size"), "not 'steps.size'"),  # width and height only
    (lambda m: m["parameters"].__setitem__("picture", {"type": "image", "targets": [{"node": "3", "input": "seed"}]})
     or m.__setitem__("checks", [{"rule": "picture.width <= width", "field": "width", "message": "x"}]),
     "a check reads number parameters only"),
    (lambda m: m["parameters"]["steps"].__setitem__("pattern", "^[0-9]+$"), "'pattern' applies to string"),
    # look-around would need a backtracking engine, whose time a hostile value could make exponential
    (lambda m: m["parameters"]["prompt"].__setitem__("pattern", "^(?!x)"), "look-around"),
    (lambda m: m["parameters"]["prompt"].__setitem__("pattern", "(a"), "'pattern' is not a regular expression"),
    (lambda m: m["parameters"].__setitem__("extra", {"type": "json", "default": float("nan"), "targets": [
        {"node": "3", "input": "denoise"}]}), "cannot be described (ValueError"),
    # a map or choices on a type whose values they cannot cover: loaded, then every request with a value outside
    # the map was accepted (202) and its dispatch failed with a KeyError (500, the job stuck)
    (lambda m: m["parameters"]["prompt"].update(choices=["a", "b"], default="a", targets=[
        {"node": "6", "input": "text", "map": {"a": "cat", "b": "dog"}}]), "'choices' applies to choice"),
    (lambda m: m["parameters"]["cfg"].update(targets=[{"node": "3", "input": "cfg", "map": {"7.0": 7.0}}]),
     "'map' applies to choice and int"),
    (lambda m: m["parameters"]["cfg"].update(choices=[0.5, 7.0], targets=[
        {"node": "3", "input": "cfg", "map": {"0.5": 2.0, "7.0": 3.0}}]), "'choices' applies to choice"),
    # no seed to draw: every request for a random one was refused as the client's mistake ("seed: empty range for
    # randrange() (8589934592, 4294967296, ...)")
    (lambda m: m["parameters"]["seed"].update(min=2**33, max=2**40, default=2**34),
     "'random_value' draws from max(min, 0) to min(max, 2^32 - 1)"),
    (lambda m: m["parameters"]["seed"].update(min=-10, max=-2, default=-3),
     "'random_value' draws from max(min, 0) to min(max, 2^32 - 1)"),
    # loaded, then every request was a 500: the job store keeps the version in a 64-bit column
    (lambda m: m.__setitem__("version", 2**63), "'version' must be a positive integer of at most 2^53 - 1"),
    # a SchemaError out of the loader: the whole reload a 500, the bridge not starting
    (lambda m: m["parameters"]["prompt"].__setitem__("max_length", 10**30), "parameter 'prompt': max_length"),
])
def test_manifest_mistakes(tmp_path, change, needle):
    folder = copy_core(tmp_path)
    edit_manifest(folder, "txt2img", change)
    with pytest.raises(WorkflowError) as e:
        W.load_workflow(folder / "txt2img.manifest.json")
    assert needle in e.value.message and "txt2img" in e.value.message


def test_a_cost_formula_is_exact_and_reads_the_values_or_the_graphs(tmp_path):
    from fractions import Fraction

    from bridge.workflows.cost import Endless, Formula

    f = Formula("max(1, ceil((a - o) / (t - o))) * t + floor(a / 3) - min(a, t) // 2 + -1 * 0.5")
    assert f.names == ["a", "o", "t"]
    # exact: 1/3 of 10**20 + 1 is no float's
    assert f({"a": 10**20 + 1, "o": 0, "t": 10**20}) == Fraction(2 * 10**20 + (10**20 + 1) // 3 - 10**20 // 2) - \
        Fraction(1, 2)
    with pytest.raises(Endless) as e:  # a division by zero: endless, naming the divisor's parameters
        f({"a": 5, "o": 4, "t": 4})
    assert e.value.names == ["t", "o"]
    folder = copy_core(tmp_path)
    edit_manifest(folder, "txt2img", lambda m: m.__setitem__("cost", "width * height * steps / 2 + 0.2"))
    wf = W.load_workflow(folder / "txt2img.manifest.json")
    # steps left out takes the graph's value; the cost is rounded up
    assert wf.cost({"width": 64, "height": 64}) == math.ceil(64 * 64 * wf.graph_value("steps") / 2 + 0.2)
    assert wf.cost_terms() == ("width", "height", "steps")
    assert wf.cost_text() == "the cost of width, height, steps (workflow txt2img's formula)"
    edit_manifest(folder, "txt2img", lambda m: m.__setitem__("cost", "steps * 512 // (width - height)"))
    wf = W.load_workflow(folder / "txt2img.manifest.json")
    with pytest.raises(InvalidParameter) as e:  # endless: refused naming the divisor's parameters
        wf.cost(wf.coerce({"width": 256, "height": 256}))
    assert e.value.field == "width" and "with width = 256, height = 256" in e.value.message
    assert "the work would never end" in e.value.message


def test_a_cost_formula_reads_an_images_size_from_wherever_the_engine_holds_it(tmp_path):
    from bridge.images import decode_image
    from tests.support.imaging import solid_png_b64

    folder = copy_core(tmp_path)
    edit_manifest(folder, "img2img", lambda m: m.__setitem__("cost", "image.width * image.height * steps + width"))
    wf = W.load_workflow(folder / "img2img.manifest.json")
    assert wf.sized_images() == ("image",) and wf.cost_terms()[:2] == ("image.width", "image.height")
    text = solid_png_b64(30, 20)
    values = wf.coerce({"image": text, "steps": 2, "width": 64})
    with pytest.raises(ValueError):  # text not read yet: the engine reads its header and passes the size
        wf.cost(values)
    assert wf.cost(values, {"image": (30, 20)}) == 30 * 20 * 2 + 64
    # a decoded image (what adapters pass) says its own size
    assert wf.cost({**values, "image": decode_image(text, "image")}) == 30 * 20 * 2 + 64
    edit_manifest(folder, "img2img", lambda m: m["parameters"]["image"].pop("required"))
    wf = W.load_workflow(folder / "img2img.manifest.json")
    assert wf.cost(wf.coerce({"steps": 2, "width": 64})) == 64  # an image left out reads as 0 x 0


def test_graph_link_to_missing_node(tmp_path):
    folder = copy_core(tmp_path)
    graph = json.loads((folder / "txt2img.json").read_text())
    graph["8"]["inputs"]["vae"] = ["42", 2]
    (folder / "txt2img.json").write_text(json.dumps(graph))
    with pytest.raises(WorkflowError) as e:
        W.load_workflow(folder / "txt2img.manifest.json")
    assert "node 8 (VAEDecode)" in e.value.message and "'42'" in e.value.message


def test_a_cycle_in_the_graph_or_made_by_a_rewire_is_refused(tmp_path):
    # ComfyUI refuses such a prompt: every job would fail; these loaded before
    folder = copy_core(tmp_path)
    graph = json.loads((folder / "txt2img.json").read_text())
    graph["5"]["inputs"]["width"] = ["8", 0]  # the latent's width from the decoder that reads it
    (folder / "txt2img.json").write_text(json.dumps(graph))
    with pytest.raises(WorkflowError) as e:
        W.load_workflow(folder / "txt2img.manifest.json")
    assert "cycle through node" in e.value.message
    edit_manifest(folder, "img2img", lambda m: m["parameters"]["vae"]["rewire"][0].update(
        link=[m["parameters"]["vae"]["rewire"][0]["node"], 0]))
    with pytest.raises(WorkflowError) as e:
        W.load_workflow(folder / "img2img.manifest.json")
    assert "parameter 'vae' links make a cycle" in e.value.message


def hostile_files(folder: Path) -> dict[str, str]:
    """Broken shared files, each beside a good workflow: file name -> what its error must say."""
    import os

    def graph_text(name: str, text: str) -> None:
        shutil.copy(WORKFLOWS / "txt2img.manifest.json", folder / f"{name}.manifest.json")
        edit_manifest(folder, name, lambda m: m.update(name=name, workflow=f"{name}.json"))
        (folder / f"{name}.json").write_text(text)

    graph = json.loads((WORKFLOWS / "txt2img.json").read_text())
    # each of these was an error other than WorkflowError: the reload a 500, the bridge not starting
    graph_text("digits", json.dumps(graph).replace('"seed": 0', '"seed": ' + "9" * 5000, 1))
    shutil.copy(WORKFLOWS / "txt2img.manifest.json", folder / "nul.manifest.json")
    edit_manifest(folder, "nul", lambda m: m.update(name="nul", workflow="a\x00b.json"))
    # loaded, then every job failed at dispatch with a RecursionError (its graph is copied for each)
    graph_text("deep", json.dumps({**graph, "3": {**graph["3"], "inputs": {**graph["3"]["inputs"],
                                                                          "seed": "DEEP"}}})
               .replace('"DEEP"', "[" * 700 + "]" * 700))
    # 100,000 nodes loaded, then held the event loop 0.66 s a job while it was copied
    graph_text("many", json.dumps({**graph, **{str(i): {"class_type": "Note", "inputs": {}}
                                               for i in range(100, 40_100)}}))
    # a reload blocked for good on a FIFO, and read a link to /dev/zero until memory ran out
    os.mkfifo(folder / "fifo.manifest.json")
    (folder / "zero.manifest.json").symlink_to("/dev/zero")
    graph_text("big", json.dumps({**graph, "3": {**graph["3"], "_meta": {"title": "x" * W.loader.MAX_FILE_BYTES}}}))
    (folder / "\udcff\u202e.manifest.json").write_text("[")
    (folder / "long.manifest.json").write_text(json.dumps({"name": "n" * 100_000, "version": 1}))
    return {"digits": "graph 'digits.json': Exceeds the limit (4300 digits)",
            "nul": "graph 'a\\x00b.json': embedded null byte",
            "deep": "graph 'deep.json': it is nested more than 64 levels deep",
            "many": "graph 'many.json': it holds more than 100000 values",
            "fifo": "manifest 'fifo.manifest.json': not a regular file",
            "zero": "manifest 'zero.manifest.json': not a regular file",
            "big": "graph 'big.json': it is larger than 8 MiB",
            "\\udcff\\u202e": "cannot read manifest '\\udcff\\u202e.manifest.json': Expecting value",
            "long": "cannot read graph 'long.json'"}


def test_hostile_files_are_refused_naming_the_file_and_why(tmp_path):
    import threading

    folder = copy_core(tmp_path)
    expected = hostile_files(folder)
    failed: list[WorkflowError] = []

    def load() -> None:
        try:
            W.load_workflows(folder)
        except WorkflowError as exc:
            failed.append(exc)

    reader = threading.Thread(target=load, daemon=True)  # the FIFO's open blocked for good
    reader.start()
    reader.join(30)
    assert failed, "the folder was not read in 30 s"
    lines = failed[0].message.splitlines()
    assert len(lines) == len(expected), lines
    for label, needle in expected.items():
        assert any(line.startswith(f"workflow {label}: ") and needle in line for line in lines), (label, lines)
    # the name of a manifest that gives a long one is the file's, not repeated at length
    assert max(map(len, lines)) < 500
    for name in CORE:
        assert W.load_workflow(folder / f"{name}.manifest.json").name == name


def test_links_a_map_puts_in_place_are_checked_once_per_target(tmp_path, monkeypatch):
    # a cycle check over the whole graph for each map value: a 60 KB manifest over 10,000 nodes took 20 s to load
    folder = copy_core(tmp_path)
    graph = {str(i): {"class_type": "Step", "inputs": {"x": [str(i - 1), 0]} if i > 1 else {"v": 1}}
             for i in range(1, 2001)}
    (folder / "chain.json").write_text(json.dumps(graph))
    picks = {f"c{i}": [str(1 + 2 * i), 0] for i in range(1000)}
    manifest = {"name": "chain", "version": 1, "outputs": {"images": {"node": "2000", "type": "images"}},
                "parameters": {"pick": {"type": "choice", "choices": list(picks), "default": "c0",
                                        "targets": [{"node": "1500", "input": "x", "map": picks}]}}}
    (folder / "chain.manifest.json").write_text(json.dumps(manifest))
    walks = []
    real = W.loader.dependents
    monkeypatch.setattr(W.loader, "dependents", lambda *a: walks.append(a) or real(*a))
    monkeypatch.setattr(W.loader, "topological", lambda *a: walks.append(a) or W.graph.topological(*a))
    with pytest.raises(WorkflowError, match="parameter 'pick' links make a cycle: graph has a cycle through node"):
        W.load_workflow(folder / "chain.manifest.json")  # c750 on: node 1500 feeds them
    assert len(walks) == 1
    manifest["parameters"]["pick"]["targets"][0]["map"] = {k: v for k, v in picks.items() if int(v[0]) < 1500}
    manifest["parameters"]["pick"]["choices"] = list(manifest["parameters"]["pick"]["targets"][0]["map"])
    (folder / "chain.manifest.json").write_text(json.dumps(manifest))
    assert W.load_workflow(folder / "chain.manifest.json").name == "chain"
    # each target or rewire is a walk over the graph: their number is bounded
    manifest["parameters"] = {f"p{i}": {"type": "bool", "targets": [{"node": "1", "input": "v"}],
                                        "rewire": [{"node": "2000", "input": "x", "link": ["1", 0]}]}
                              for i in range(W.loader.MAX_LINKING + 1)}
    (folder / "chain.manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WorkflowError, match=f"at {W.loader.MAX_LINKING + 1} inputs .* at most "
                                            f"{W.loader.MAX_LINKING}"):
        W.load_workflow(folder / "chain.manifest.json")


def test_a_long_chain_is_ordered_without_recursion():
    chain = {str(i): {"class_type": "Reroute", "inputs": {"x": [str(i - 1), 0]} if i > 1 else {}}
             for i in range(1, 20_001)}
    assert W.graph.topological(dict(reversed(chain.items()))) == [str(i) for i in range(1, 20_001)]
    assert W.graph.check_graph(chain) == []


@pytest.mark.parametrize("node", [[], {"inputs": {}}, {"class_type": 3, "inputs": {}},
                                  {"class_type": "Reroute", "inputs": []},
                                  {"class_type": "Reroute", "inputs": {}, "_meta": "a title"}])
def test_a_node_without_its_shape_is_named(node):
    graph = {"1": {"class_type": "Reroute", "inputs": {}}, "2": node}
    assert W.graph.check_graph(graph) == ["node '2': needs a 'class_type', an 'inputs' object and, if it has one, "
                                          "a '_meta' object"]


def test_a_node_with_its_shape_and_a_meta_object_passes():
    assert W.graph.check_graph({"1": {"class_type": "Reroute", "inputs": {}, "_meta": {"title": "x"}}}) == []


def test_object_info_problems_name_workflow_and_node(workflows):
    oi = copy.deepcopy(OI)
    del oi["ResizeAndPadImage"]
    oi["KSampler"]["input"]["required"].pop("denoise")
    oi["KSampler"]["input"]["required"]["extra"] = ["INT", {}]
    problems = W.check_object_info(workflows["img2img"], oi)
    assert any("workflow img2img: node 12 (ResizeAndPadImage)" in p and "not installed" in p for p in problems)
    assert any("node 3 (KSampler)" in p and "'denoise' is not an input" in p for p in problems)
    assert any("node 3 (KSampler)" in p and "required input 'extra' is missing" in p for p in problems)


def test_coerce_and_bind(workflows):
    wf = workflows["img2img"]
    values = wf.coerce({"prompt": "p", "seed": 7, "steps": 4, "cfg": 5, "width": 128, "height": 64,
                        "resize_mode": "resize and fill", "image": "eA=="})
    assert values["cfg"] == 5.0 and isinstance(values["cfg"], float)
    assert values["denoise"] == 0.75 and values["sampler"] == "euler"  # defaults
    assert "checkpoint" not in values  # no default: left to the graph / live list
    values["image"] = "uploaded.png"
    live = {"KSampler.sampler_name": ["euler", "ddim"], "KSampler.scheduler": ["normal"],
            "CheckpointLoaderSimple.ckpt_name": ["a.safetensors", "b.safetensors"]}
    graph = wf.bind(values, live.get)
    assert graph is not wf.graph and wf.graph["10"]["inputs"]["image"] == "example.png"  # the original is untouched
    ids = {n["class_type"]: nid for nid, n in graph.items()}
    ks = graph[ids["KSampler"]]["inputs"]
    assert (ks["seed"], ks["steps"], ks["cfg"], ks["denoise"]) == (7, 4, 5.0, 0.75)
    assert graph[ids["LoadImage"]]["inputs"]["image"] == "uploaded.png"
    assert graph[ids["ImageScale"]]["inputs"]["width"] == 128
    assert graph[ids["ResizeAndPadImage"]]["inputs"]["target_height"] == 64
    assert graph[ids["VAEEncode"]]["inputs"]["pixels"] == [ids["ResizeAndPadImage"], 0]
    assert graph[ids["CheckpointLoaderSimple"]]["inputs"]["ckpt_name"] == "a.safetensors"
    live["CheckpointLoaderSimple.ckpt_name"].append(wf.graph[ids["CheckpointLoaderSimple"]]["inputs"]["ckpt_name"])
    assert wf.bind(values, live.get)[ids["CheckpointLoaderSimple"]]["inputs"]["ckpt_name"] == \
        wf.graph[ids["CheckpointLoaderSimple"]]["inputs"]["ckpt_name"]  # the graph's own value when available
    with pytest.raises(InvalidParameter) as e:
        wf.bind({**values, "sampler": "lms"}, live.get)
    assert e.value.field == "sampler" and "not available" in e.value.message


@pytest.mark.parametrize("name", ["txt2img", "img2img", "inpaint", "pico_rgb565"])
def test_clip_skip_sets_the_last_layer_both_encoders_read(workflows, name):
    wf = workflows[name]
    assert wf.version >= 2  # clip_skip changed what the graph does
    ids = {n["class_type"]: nid for nid, n in wf.graph.items()}
    clip_node = ids["CLIPSetLastLayer"]
    # the text encoder comes from the checkpoint through the LoRA stack
    assert wf.graph[clip_node]["inputs"]["clip"] == [ids["PixartLoraStack"], 1]
    assert wf.graph[ids["PixartLoraStack"]]["inputs"]["clip"] == [ids["CheckpointLoaderSimple"], 1]
    encoders = [n for n in wf.graph.values() if n["class_type"] == "CLIPTextEncode"]
    assert len(encoders) == 2 and all(n["inputs"]["clip"] == [clip_node, 0] for n in encoders)
    extra = {k: "x.png" for k in ("image", "mask") if k in wf.parameters}
    for skip, layer in ((None, -1), (1, -1), (2, -2), (12, -12)):
        values = wf.coerce({**extra, **({} if skip is None else {"clip_skip": skip})})
        assert wf.bind(values)[clip_node]["inputs"]["stop_at_clip_layer"] == layer
    for bad in (0, 13, -2, 2.5, "2"):
        with pytest.raises(InvalidParameter) as e:
            wf.coerce({**extra, "clip_skip": bad})
        assert e.value.field == "clip_skip"
    assert W.check_object_info(wf, OI) == []


def test_inpaint_fill_rewires_the_latent_the_sampler_gets(workflows):
    wf = workflows["inpaint"]
    assert wf.version >= 3  # `fill` added
    p = wf.parameters["fill"]
    assert p.type == "choice" and p.default == "original"
    assert list(p.choices) == ["original", "latent noise", "latent nothing"]
    by_class = lambda g, cls: [nid for nid, n in g.items() if n["class_type"] == cls]
    (repeat,) = by_class(wf.graph, "RepeatLatentBatch")
    (composite,) = by_class(wf.graph, "LatentCompositeMasked")
    (noise,) = by_class(wf.graph, "PixartNoiseLatent")
    (zeros,) = by_class(wf.graph, "LatentMultiply")
    (set_mask,) = by_class(wf.graph, "SetLatentNoiseMask")
    (sampler,) = by_class(wf.graph, "KSampler")
    (encode,) = by_class(wf.graph, "VAEEncode")
    base = {"image": "x.png", "mask": "m.png", "seed": 1234}
    seen = {}
    for fill, (latent, source) in {None: (repeat, zeros), "original": (repeat, zeros),
                                   "latent noise": (composite, noise), "latent nothing": (composite, zeros)}.items():
        g = wf.bind(wf.coerce({**base, **({} if fill is None else {"fill": fill})}))
        assert g[sampler]["inputs"]["latent_image"] == [set_mask, 0]
        assert g[set_mask]["inputs"]["samples"] == [latent, 0], fill
        assert g[composite]["inputs"]["source"] == [source, 0], fill
        # both sources and the composite work on the encoded (batched) image, masked like the sampler
        assert g[repeat]["inputs"]["samples"] == [encode, 0]
        assert g[composite]["inputs"]["destination"] == g[noise]["inputs"]["samples"] == [repeat, 0]
        assert g[zeros]["inputs"] == {"samples": [repeat, 0], "multiplier": 0.0}
        assert g[composite]["inputs"]["mask"] == g[set_mask]["inputs"]["mask"]
        # the fill noise is drawn from the sampler's seed and scaled by the sampler's model
        assert g[noise]["inputs"]["seed"] == g[sampler]["inputs"]["seed"] == 1234
        assert g[noise]["inputs"]["model"] == g[sampler]["inputs"]["model"]
        seen[fill] = g
    assert seen[None] == seen["original"]
    with pytest.raises(InvalidParameter) as e:
        wf.coerce({**base, "fill": "fill"})
    assert e.value.field == "fill"
    assert W.check_object_info(wf, OI) == []


@pytest.mark.parametrize("change", [
    lambda t: t["map"].pop("12"),                           # a value the limits allow has no translation
    lambda t: t["map"].__setitem__("13", -13),              # a key outside min..max
])
def test_int_map_must_cover_min_to_max(tmp_path, change):
    folder = copy_core(tmp_path)
    edit_manifest(folder, "txt2img", lambda m: change(m["parameters"]["clip_skip"]["targets"][0]))
    with pytest.raises(WorkflowError) as e:
        W.load_workflow(folder / "txt2img.manifest.json")
    assert "an int 'map' needs 'min' and 'max'" in e.value.message and "clip_skip" in e.value.message


@pytest.mark.parametrize("params,field", [
    ({"steps": 1.5}, "steps"), ({"steps": True}, "steps"), ({"cfg": float("nan")}, "cfg"), ({"cfg": 31}, "cfg"),
    ({"width": 100}, "width"), ({"resize_mode": "stretch"}, "resize_mode"), ({"prompt": None, "seed": "1"}, "seed"),
    ({"image": 5}, "image"), ({"bogus": 1}, "bogus")])
def test_coerce_errors_name_the_field(workflows, params, field):
    with pytest.raises(InvalidParameter) as e:
        workflows["img2img"].coerce({"image": "eA==", **params})
    assert e.value.field == field and field in e.value.message


def test_values_accepted_before_an_edit_are_checked_against_the_edited_workflow(tmp_path):
    folder = copy_core(tmp_path)
    before = W.load_workflow(folder / "txt2img.manifest.json")
    values = before.coerce({"prompt": "a cat", "clip_skip": 2})

    def retype(m: dict) -> None:  # clip_skip becomes a choice whose map has no key "2"
        m["parameters"]["clip_skip"] = {"type": "choice", "choices": ["last", "one before"], "default": "last",
                                        "targets": [{"node": "10", "input": "stop_at_clip_layer",
                                                     "map": {"last": -1, "one before": -2}}]}
        del m["parameters"]["subseed"]

    edit_manifest(folder, "txt2img", retype)
    after = W.load_workflow(folder / "txt2img.manifest.json")
    with pytest.raises(KeyError):
        after.bind(values)  # what the dispatcher did with them
    with pytest.raises(InvalidParameter) as e:
        after.recheck(values)
    assert e.value.field == "clip_skip" and "changed (now v" in e.value.message
    kept = after.recheck({**values, "clip_skip": "one before"})
    assert "subseed" not in kept and kept["seed"] == values["seed"] and kept["prompt"] == "a cat"
    assert after.bind(kept)["10"]["inputs"]["stop_at_clip_layer"] == -2
    with pytest.raises(InvalidParameter) as e:
        after.recheck({}, ["prompt"])  # a stored image for what is now text
    assert e.value.field == "prompt"


def test_a_choice_of_numbers_takes_those_numbers_only(tmp_path):
    folder = copy_core(tmp_path)
    edit_manifest(folder, "txt2img", lambda m: m["parameters"].__setitem__("clip_skip", {
        "type": "choice", "choices": [1, 2, 2.5], "default": 1,
        "targets": [{"node": "10", "input": "stop_at_clip_layer", "map": {"1": -1, "2": -2, "2.5": -3}}]}))
    wf = W.load_workflow(folder / "txt2img.manifest.json")
    assert wf.bind(wf.coerce({"clip_skip": 2}))["10"]["inputs"]["stop_at_clip_layer"] == -2
    assert wf.bind(wf.coerce({"clip_skip": 2.5}))["10"]["inputs"]["stop_at_clip_layer"] == -3
    for wrong in (True, "2", 2.0, 3):
        with pytest.raises(InvalidParameter) as e:
            wf.coerce({"clip_skip": wrong})
        assert e.value.field == "clip_skip" and "1, 2, 2.5" in e.value.message


def test_json_list_values_are_not_links(tmp_path):
    folder = copy_core(tmp_path)
    edit_manifest(folder, "txt2img", lambda m: m["parameters"].__setitem__(
        "raw_prompt", {"type": "json", "targets": [{"node": "6", "input": "text"}]}))
    wf = W.load_workflow(folder / "txt2img.manifest.json")
    graph = wf.bind({"raw_prompt": ["a", 1]})
    assert graph["6"]["inputs"]["text"] == {"__value__": ["a", 1]}


def test_unknown_workflow(workflows):
    with pytest.raises(WorkflowNotFound):
        W.get_workflow(workflows, "nope")


# ---------------------------------------------------------------------- editor format
def test_editor_copies_are_in_sync(workflows):
    """Regenerate with: python -m bridge.workflows export-editor --url http://127.0.0.1:8188"""
    for name, wf in workflows.items():
        if not wf.node_types() <= set(OI):
            continue  # needs node types the double does not know: checked against a real ComfyUI instead
        expected = W.editor_json_text(W.export_editor(wf, OI))
        path = EDITOR / f"{name}.json"
        assert path.exists() and path.read_text() == expected, f"{path} is stale"


def test_editor_export_structure(workflows):
    for name in CORE:
        wf = workflows[name]
        ui = W.export_editor(wf, OI)
        assert ui["version"] == 0.4 and len(ui["nodes"]) == len(wf.graph)
        nodes = {n["id"]: n for n in ui["nodes"]}
        assert ui["last_node_id"] == max(nodes) and ui["last_link_id"] == len(ui["links"])
        api_links = sum(1 for n in wf.graph.values() for v in n["inputs"].values() if W.is_link(v))
        assert len(ui["links"]) == api_links
        for link_id, src, slot, dst, dst_slot, typ in ui["links"]:
            assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
            assert link_id in nodes[src]["outputs"][slot]["links"]
            assert nodes[src]["outputs"][slot]["type"] == typ == nodes[dst]["inputs"][dst_slot]["type"]
            # The link mirrors the API graph's link.
            assert wf.graph[str(dst)]["inputs"][nodes[dst]["inputs"][dst_slot]["name"]] == [str(src), slot]
        orders = sorted(n["order"] for n in ui["nodes"])
        assert orders == list(range(len(nodes)))
        for link_id, src, slot, dst, dst_slot, typ in ui["links"]:
            assert nodes[src]["order"] < nodes[dst]["order"]
        ks = next(n for n in ui["nodes"] if n["type"] == "KSampler")
        g = wf.graph[str(ks["id"])]["inputs"]
        assert ks["widgets_values"] == [g["seed"], "fixed", g["steps"], g["cfg"], g["sampler_name"],
                                        g["scheduler"], g["denoise"]]
    ui = W.export_editor(workflows["inpaint"], OI)
    mask = next(n for n in ui["nodes"] if n["type"] == "LoadImageMask")
    assert mask["widgets_values"] == ["example.png", "red", "image"]
    load = next(n for n in ui["nodes"] if n["type"] == "LoadImage")
    assert load["widgets_values"] == ["example.png", "image"]


def test_cli_validate_and_check(tmp_path, capsys):
    oi_file = tmp_path / "oi.json"
    oi_file.write_text(json.dumps(OI))
    (tmp_path / "wf").mkdir()
    folder = copy_core(tmp_path / "wf")
    assert W.main(["validate", "--dir", str(folder), "--object-info", str(oi_file)]) == 0
    out = tmp_path / "editor"
    assert W.main(["export-editor", "--dir", str(folder), "--object-info", str(oi_file), "--out", str(out)]) == 0
    assert W.main(["export-editor", "--dir", str(folder), "--object-info", str(oi_file), "--out", str(out),
                   "--check"]) == 0
    (out / "txt2img.json").write_text("{}")
    assert W.main(["export-editor", "--dir", str(folder), "--object-info", str(oi_file), "--out", str(out),
                   "--check"]) == 1
    broken = copy.deepcopy(OI)
    del broken["SetLatentNoiseMask"]
    oi_file.write_text(json.dumps(broken))
    assert W.main(["validate", "--dir", str(folder), "--object-info", str(oi_file)]) == 1
    assert "workflow inpaint: node 20 (SetLatentNoiseMask)" in capsys.readouterr().err


def _txt2img_with(tmp_path: Path, extra_nodes: dict, outputs: dict) -> W.Workflow:
    """txt2img (SaveImage = node 9, VAEDecode = node 8) with nodes and manifest outputs added."""
    copy_core(tmp_path)
    graph = json.loads((tmp_path / "txt2img.json").read_text())
    graph.update(extra_nodes)
    (tmp_path / "txt2img.json").write_text(json.dumps(graph))
    edit_manifest(tmp_path, "txt2img", lambda m: m["outputs"].update(outputs))
    return W.load_workflow(tmp_path / "txt2img.manifest.json")


def test_value_from_a_non_output_node_is_allowed_when_an_output_node_depends_on_it(tmp_path):
    # VAEDecode (node 8) is not an output node, but SaveImage (9) reads it, so ComfyUI runs it and /history
    # carries whatever ui dict it reports. A second decoder two hops upstream of a preview counts too.
    wf = _txt2img_with(tmp_path, {
        "50": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "51": {"class_type": "ImageScale", "inputs": {"image": ["50", 0], "upscale_method": "nearest-exact",
                                                      "width": 8, "height": 8, "crop": "disabled"}},
        "52": {"class_type": "PreviewImage", "inputs": {"images": ["51", 0]}}},
        {"decoded": {"node": "8", "type": "value", "key": "x"},
         "far": {"node": "50", "type": "value", "key": "x"}})
    assert W.check_object_info(wf, OI) == []
    assert W.dependents(wf.graph, "50") == {"51", "52"}
    assert W.output_nodes(wf.graph, OI) == {"9", "52"}


def test_value_from_a_node_no_output_depends_on_is_refused(tmp_path):
    wf = _txt2img_with(tmp_path, {
        "50": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "51": {"class_type": "ImageScale", "inputs": {"image": ["50", 0], "upscale_method": "nearest-exact",
                                                      "width": 8, "height": 8, "crop": "disabled"}}},
        {"dangling": {"node": "51", "type": "value", "key": "x"},
         "not_images": {"node": "8", "type": "images"}})
    problems = W.check_object_info(wf, OI)
    assert len(problems) == 2, problems
    assert any("output 'dangling' reads node 51 (ImageScale)" in p and "no output node depends on it" in p
               for p in problems)
    # An images output must come from an output node (SaveImage/PreviewImage/SaveImageWebsocket) itself.
    assert any("output 'not_images' reads node 8 (VAEDecode), which is not an output node" in p for p in problems)


def test_execution_targets_pick_the_output_nodes_the_requested_outputs_need(tmp_path):
    wf = _txt2img_with(tmp_path, {
        "50": {"class_type": "ImageScale", "inputs": {"image": ["8", 0], "upscale_method": "nearest-exact",
                                                      "width": 8, "height": 8, "crop": "disabled"}},
        "51": {"class_type": "PreviewImage", "inputs": {"images": ["50", 0]}},
        "60": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "61": {"class_type": "PreviewImage", "inputs": {"images": ["60", 0]}}},
        {"preview": {"node": "51", "type": "images"},
         "decoded": {"node": "8", "type": "value", "key": "x"},
         "other": {"node": "60", "type": "value", "key": "x"}})
    assert W.execution_targets(wf, ["images"], OI) == ["9"]
    assert W.execution_targets(wf, ["preview"], OI) == ["51"]
    # A value from node 8 needs an output node downstream: SaveImage (9, 2 hops) is cheaper than the preview
    # (51, 3 hops); when the preview is already wanted, nothing is added for it.
    assert W.execution_targets(wf, ["decoded"], OI) == ["9"]
    assert W.execution_targets(wf, ["preview", "decoded"], OI) == ["51"]
    assert W.execution_targets(wf, ["other", "images"], OI) == ["9", "61"]


@pytest.mark.parametrize("name", ["pixel_art_ai", "axera_txt2img", "axera_img2img"])
def test_snap_step_routes_the_pixelate_input(workflows, name):
    wf = workflows[name]
    ids = {n["class_type"]: nid for nid, n in wf.graph.items()}
    extra = {k: "x.png" for k in ("image", "sketch") if k in wf.parameters and wf.parameters[k].required}
    default = wf.bind(wf.coerce(extra))
    off = wf.bind(wf.coerce({**extra, "snap": "off"}))
    on = wf.bind(wf.coerce({**extra, "snap": "on"}))
    snap_input = wf.graph[ids["PixartSnapToGrid"]]["inputs"]["image"]
    assert off[ids["PixartPixelate"]]["inputs"]["image"] == snap_input
    assert on[ids["PixartPixelate"]]["inputs"]["image"] == [ids["PixartSnapToGrid"], 0]
    # the AI sketch path snaps by default ('auto'); the Axera workflows leave it to the client
    assert default[ids["PixartPixelate"]]["inputs"]["image"] == (
        [ids["PixartSnapToGrid"], 0] if name == "pixel_art_ai" else snap_input)
    if name == "pixel_art_ai":  # the Axera workflows pixelate only when their postprocess choice says so
        assert ids["PixartSnapToGrid"] in wf.needed_nodes(graph=on) and ids["PixartSnapToGrid"] not in \
            wf.needed_nodes(graph=off)


def test_ai_pixel_art_snaps_only_to_a_grid_with_the_cells_it_needs(workflows):
    wf = workflows["pixel_art_ai"]
    ids = {n["class_type"]: nid for nid, n in wf.graph.items()}
    g = wf.bind(wf.coerce({"sketch": "x.png", "width": 40, "height": 24, "snap": "auto"}))
    snap = g[ids["PixartSnapToGrid"]]["inputs"]
    # a coarser grid than the result asks for passes the picture through (the node's min_columns / min_rows)
    assert (snap["min_columns"], snap["min_rows"]) == (40, 24)
    assert g[ids["PixartPixelate"]]["inputs"]["image"] == [ids["PixartSnapToGrid"], 0]
    assert (g[ids["PixartPixelate"]]["inputs"]["width"], g[ids["PixartPixelate"]]["inputs"]["height"]) == (40, 24)
    assert wf.parameters["snap"].default == "auto" and wf.version >= 5


def test_palette_hex_and_token_seed_patterns_take_what_the_nodes_take(workflows):
    # the patterns refuse at the request what the nodes refused after the job ran; checked against the nodes'
    # own parsers on random texts of their alphabets
    import random as rnd

    from pixart_nodes.core.aleaart import parse_seed
    from pixart_nodes.core.palette import palette_from_hex

    rng = rnd.Random(3)
    check = workflows["pixel_art"]._checkers["palette_hex"]
    pieces = ["#", "0x", "0X", "f", "A", "9", "g", " ", ",", ";", "\n", "#f80", "#ff8800", "ff8800", "0xff8800"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        try:
            palette_from_hex(text)
            parsed = True
        except ValueError:
            parsed = not text.strip(" ,;\n")  # no colours at all: the pattern lets an unused palette_hex be empty
        try:
            check.validate_python(text)
            matched = True
        except Exception:  # noqa: BLE001 - pydantic's ValidationError
            matched = False
        assert matched == parsed, text
    for n, ok in ((256, True), (257, False)):
        text = " ".join(["#102030"] * n)
        assert ok == (not bool(_refused(check, text)))
    seed = workflows["aleaart"]._checkers["token_seed"]
    for text, ok in (("", True), ("0x" + "ab" * 32, True), ("AB" * 32, True), (" 0x" + "0" * 64, False), ("ab" * 32 + "\n", True), ("0x", False),
                     ("0x" + "ab" * 31, False), ("0x" + "g" * 64, False), ("0x" + "ab" * 33, False)):
        assert ok == (not _refused(seed, text)), text
        if ok and text:
            assert len(parse_seed(text)) == 32


def _refused(checker, value) -> bool:
    try:
        checker.validate_python(value)
    except Exception:  # noqa: BLE001 - pydantic's ValidationError
        return True
    return False
