"""Workflow files people share: graphs ComfyUI (and its editor) would take, read as ComfyUI reads them, and files it
would refuse refused at load with the node and input named."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bridge import workflows as W
from bridge.errors import WorkflowError
from tests.support.double import object_info_for
from tests.support.subgraphs import SUB_ID, sampler_in_a_subgraph

OI = object_info_for(["tiny.safetensors"], ["example.png"])


@pytest.fixture(scope="module")
def workflows() -> dict[str, W.Workflow]:
    return W.load_workflows(W.DEFAULT_WORKFLOWS_DIR)


def _served(tmp_path: Path, name: str, graph: dict) -> Path:
    """A shipped manifest beside `graph`, in a folder of its own."""
    (tmp_path / f"{name}.json").write_text(json.dumps(graph))
    (tmp_path / f"{name}.manifest.json").write_text((W.DEFAULT_WORKFLOWS_DIR / f"{name}.manifest.json").read_text())
    return tmp_path / f"{name}.manifest.json"


def test_an_api_export_with_the_upload_widget_can_run(workflows: dict[str, W.Workflow]) -> None:
    # ComfyUI's editor (0.3.x) exported LoadImage as {"image": ..., "upload": "image"}; ComfyUI ignores the extra
    # input, but it was a problem of the workflow on every backend, so no backend was sent its jobs.
    wf = copy.copy(workflows["img2img"])
    wf.graph = copy.deepcopy(wf.graph)
    loader = next(n for n in wf.graph.values() if n["class_type"] == "LoadImage")
    loader["inputs"]["upload"] = "image"
    assert W.check_object_info(wf, OI) == []
    # a misspelt input is still named: ComfyUI would silently ignore it
    sampler = next(n for n in wf.graph.values() if n["class_type"] == "KSampler")
    sampler["inputs"]["upload"] = "image"
    assert any("input 'upload' is not an input of KSampler" in p for p in W.check_object_info(wf, OI))


@pytest.mark.parametrize("value", [[4, 0], ["4", "0"], ["4", 0, 1], [], ["4", 0.0], ["4", True]])
def test_a_list_value_that_is_not_a_link_is_refused_at_load(tmp_path: Path, workflows: dict[str, W.Workflow],
                                                            value: list) -> None:
    # ComfyUI reads every list in an input as a link, and refuses one that is not ["node id", slot] ("Bad linked
    # input", or an exception indexing the node's outputs): the workflow loaded and every job failed.
    graph = copy.deepcopy(workflows["txt2img"].graph)
    graph["3"]["inputs"]["model"] = value
    with pytest.raises(WorkflowError) as e:
        W.load_workflow(_served(tmp_path, "txt2img", graph))
    assert "node 3 (KSampler) input 'model'" in e.value.message and "link" in e.value.message
    assert e.value.message.count(";") == 0  # one problem, not one per line of the file


def test_an_editor_file_saved_as_the_graph_is_named_as_one(tmp_path: Path, workflows: dict[str, W.Workflow]) -> None:
    # The editor's "Save" (not "Export (API)") dropped beside a manifest: 18 problems about nodes called 'id',
    # 'revision', 'links' ..., none saying what the file is or how to convert it.
    ui = W.export_editor(workflows["txt2img"], OI)
    with pytest.raises(WorkflowError) as e:
        W.load_workflow(_served(tmp_path, "txt2img", ui))
    assert "editor format" in e.value.message and "Export (API)" in e.value.message
    assert "node 'revision'" not in e.value.message


def _bypassed_controlnet(ui: dict) -> tuple[dict, list, list]:
    """A ControlNetApplyAdvanced between the text encoders and the sampler, bypassed (mode 4), as people toggle a
    ControlNet off; returns the sampler and where its positive and negative came from."""
    sampler = next(n for n in ui["nodes"] if n["type"] == "KSampler")
    slot = {inp["name"]: i for i, inp in enumerate(sampler["inputs"])}
    rows = {r[0]: r for r in ui["links"]}
    pos, neg = (rows[sampler["inputs"][slot[k]]["link"]] for k in ("positive", "negative"))
    cn = {"id": 95, "type": "ControlNetApplyAdvanced", "mode": 4, "widgets_values": [1.0, 0.0, 1.0],
          "inputs": [{"name": "positive", "type": "CONDITIONING", "link": 950},
                     {"name": "negative", "type": "CONDITIONING", "link": 951},
                     {"name": "control_net", "type": "CONTROL_NET", "link": None},
                     {"name": "image", "type": "IMAGE", "link": None},
                     {"name": "vae", "type": "VAE", "link": None}],
          "outputs": [{"name": "positive", "type": "CONDITIONING", "links": [952]},
                      {"name": "negative", "type": "CONDITIONING", "links": [953]}]}
    ui["nodes"].append(cn)
    ui["links"] += [[950, pos[1], pos[2], 95, 0, "CONDITIONING"], [951, neg[1], neg[2], 95, 1, "CONDITIONING"],
                    [952, 95, 0, sampler["id"], slot["positive"], "CONDITIONING"],
                    [953, 95, 1, sampler["id"], slot["negative"], "CONDITIONING"]]
    sampler["inputs"][slot["positive"]]["link"] = 952
    sampler["inputs"][slot["negative"]]["link"] = 953
    return sampler, [str(pos[1]), pos[2]], [str(neg[1]), neg[2]]


def test_a_bypassed_node_passes_the_input_at_its_output_slot(workflows: dict[str, W.Workflow]) -> None:
    # The frontend passes output N of a bypassed node through input N where that input's type fits; the first input
    # of the type was taken instead, so a bypassed ControlNet fed the positive prompt in as the negative one too.
    ui = W.export_editor(workflows["txt2img"], OI)
    sampler, positive, negative = _bypassed_controlnet(ui)
    graph = W.editor_to_api(ui, OI)
    assert "95" not in graph
    inputs = graph[str(sampler["id"])]["inputs"]
    assert (inputs["positive"], inputs["negative"]) == (positive, negative)


def test_control_widgets_are_counted_as_the_frontend_adds_them() -> None:
    # A combo with control_after_generate gets two UI-only widgets (the control and its filter list), stored after
    # it; an INT that says control_after_generate: false gets none, whatever its name. Each misplaced every later
    # widget value by one.
    oi = copy.deepcopy(OI)
    oi["PickStyle"] = {"input": {"required": {"style": [["ink", "wash", "pixel"], {"control_after_generate": True}],
                                              "strength": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0}]}},
                       "input_order": {"required": ["style", "strength"]}, "output": ["STRING"],
                       "output_name": ["STRING"], "name": "PickStyle", "output_node": False}
    oi["FixedSeed"] = {"input": {"required": {"seed": ["INT", {"default": 0, "control_after_generate": False}],
                                              "count": ["INT", {"default": 1, "min": 1, "max": 64}]}},
                       "input_order": {"required": ["seed", "count"]}, "output": ["INT"], "output_name": ["INT"],
                       "name": "FixedSeed", "output_node": False}
    ui = {"nodes": [{"id": 1, "type": "PickStyle", "mode": 0, "inputs": [], "outputs": [],
                     "widgets_values": ["pixel", "randomize", "", 0.25]},
                    {"id": 2, "type": "FixedSeed", "mode": 0, "inputs": [], "outputs": [], "widgets_values": [7, 12]}],
          "links": []}
    graph = W.editor_to_api(ui, oi)
    assert graph["1"]["inputs"] == {"style": "pixel", "strength": 0.25}
    assert graph["2"]["inputs"] == {"seed": 7, "count": 12}


def test_a_node_id_used_twice_in_an_editor_file_is_named(workflows: dict[str, W.Workflow]) -> None:
    # The second node of an id silently replaced the first (the editor renumbers it when it opens the file).
    ui = W.export_editor(workflows["txt2img"], OI)
    dup = copy.deepcopy(next(n for n in ui["nodes"] if n["type"] == "CLIPTextEncode"))
    dup["id"] = next(n for n in ui["nodes"] if n["type"] == "KSampler")["id"]
    ui["nodes"].append(dup)
    with pytest.raises(WorkflowError, match=rf"node id {dup['id']} is used by more than one node"):
        W.editor_to_api(ui, OI)


def test_a_map_value_that_is_a_list_but_not_a_link_is_refused_at_load(tmp_path: Path) -> None:
    # A slot written as text ("0") was bound as a plain list: ComfyUI refused every job that chose it.
    manifest = json.loads((W.DEFAULT_WORKFLOWS_DIR / "img2img.manifest.json").read_text())
    target = next(t for t in manifest["parameters"]["resize_mode"]["targets"] if t["input"] == "pixels")
    target["map"]["resize and fill"] = ["12", "0"]
    (tmp_path / "img2img.json").write_text((W.DEFAULT_WORKFLOWS_DIR / "img2img.json").read_text())
    (tmp_path / "img2img.manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WorkflowError, match=r"parameter 'resize_mode' maps 'resize and fill' to a list that is not "
                                            r"a link"):
        W.load_workflow(tmp_path / "img2img.manifest.json")


def _editor_txt2img(workflows: dict[str, W.Workflow]) -> tuple[dict, dict]:
    """txt2img as the editor saves it, with a checkpoint the test backend has; and its KSampler node."""
    ui = W.export_editor(workflows["txt2img"], OI)
    next(n for n in ui["nodes"] if n["type"] == "CheckpointLoaderSimple")["widgets_values"][0] = "tiny.safetensors"
    return ui, next(n for n in ui["nodes"] if n["type"] == "KSampler")


def _drafted_seed(tmp_path: Path, ui: dict, name: str) -> W.Parameter:
    """`python -m bridge.workflows new` on the editor file `ui` (KSampler's widgets as parameters): its seed."""
    src, oi = tmp_path / f"{name}.src.json", tmp_path / "oi.json"
    src.write_text(json.dumps(ui))
    oi.write_text(json.dumps(OI))
    assert W.main(["new", str(src), "--name", name, "--object-info", str(oi), "--out", str(tmp_path / "out"),
                   "--nodes", "KSampler"]) == 0
    return W.load_workflow(tmp_path / "out" / f"{name}.manifest.json").parameters["seed"]


def test_a_seed_saved_as_randomize_is_drafted_random(tmp_path: Path, workflows: dict[str, W.Workflow]) -> None:
    # The editor draws a new seed for every run of a seed whose control says "randomize"; the drafted manifest made
    # the saved seed the default, so every call that leaves seed out makes the same picture.
    ui, sampler = _editor_txt2img(workflows)
    assert sampler["widgets_values"][1] == "fixed"
    sampler["widgets_values"][1] = "randomize"
    seed = _drafted_seed(tmp_path, ui, "tuned")
    assert seed.default == seed.random_value == -1
    # the note that carried the control to the draft stays out of the graph written beside it
    assert all("randomize" not in node.get("_meta", {})
               for node in json.loads((tmp_path / "out" / "tuned.json").read_text()).values())


def test_a_seed_driven_by_a_randomizing_primitive_is_drafted_random(tmp_path: Path,
                                                                      workflows: dict[str, W.Workflow]) -> None:
    # a seed shared by several samplers is a PrimitiveNode's ([value, "randomize"]); its control was read only
    # on the sampler's own widget, so the draft made the saved value every call's seed
    ui, sampler = _editor_txt2img(workflows)
    link = max([lk[0] for lk in ui["links"]] + [0]) + 1
    prim = max(n["id"] for n in ui["nodes"]) + 1
    sampler["inputs"] = [*sampler.get("inputs", []), {"name": "seed", "type": "INT", "link": link,
                                                     "widget": {"name": "seed"}}]
    ui["nodes"].append({"id": prim, "type": "PrimitiveNode", "mode": 0, "inputs": [],
                        "outputs": [{"name": "INT", "type": "INT", "links": [link], "widget": {"name": "seed"}}],
                        "widgets_values": [5, "randomize"]})
    ui["links"].append([link, prim, 0, sampler["id"], len(sampler["inputs"]) - 1, "INT"])
    seed = _drafted_seed(tmp_path, ui, "shared")
    assert seed.default == seed.random_value == -1
    # a primitive whose control is "fixed" keeps its value as the default
    ui["nodes"][-1]["widgets_values"] = [5, "fixed"]
    assert _drafted_seed(tmp_path, ui, "fixed").default == 5


def _draft_and_load(tmp_path: Path, graph_or_ui: dict, name: str, oi: dict = OI, *nodes: str) -> W.Workflow:
    """`python -m bridge.workflows new` on a shared file, then the draft loaded as the bridge loads it."""
    src, oi_file = tmp_path / f"{name}.src.json", tmp_path / f"{name}.oi.json"
    src.write_text(json.dumps(graph_or_ui))
    oi_file.write_text(json.dumps(oi))
    args = ["new", str(src), "--name", name, "--object-info", str(oi_file), "--out", str(tmp_path / "out")]
    assert W.main(args + (["--nodes", *nodes] if nodes else [])) == 0
    return W.load_workflow(tmp_path / "out" / f"{name}.manifest.json")


def test_an_older_api_export_with_choose_file_to_upload_is_served(tmp_path: Path,
                                                                 workflows: dict[str, W.Workflow]) -> None:
    # Before "upload", the editor's "Export (API)" wrote LoadImage's button as "choose file to upload": "image"
    # (many shared scripts still send it); ComfyUI ignores it, the checks named it a problem on every backend
    graph = copy.deepcopy(workflows["img2img"].graph)
    loader = next(n for n in graph.values() if n["class_type"] == "LoadImage")
    loader["inputs"]["choose file to upload"] = "image"
    wf = _draft_and_load(tmp_path, graph, "old_export")
    assert W.check_object_info(wf, OI) == []
    assert wf.parameters["image"].required


def test_a_required_widget_an_old_api_graph_lacks_takes_the_editors_value(tmp_path: Path,
                                                                          workflows: dict[str, W.Workflow]) -> None:
    # exported before the node gained the input: ComfyUI refuses the job ("Required input is missing"); the
    # editor, opening the file, gives it the declared default (a list without one: its first choice)
    graph = copy.deepcopy(workflows["txt2img"].graph)
    del graph["3"]["inputs"]["denoise"], graph["3"]["inputs"]["scheduler"]
    wf = _draft_and_load(tmp_path, graph, "older")
    assert W.check_object_info(wf, OI) == []
    drafted = json.loads((tmp_path / "out" / "older.json").read_text())["3"]["inputs"]
    scheduler_choices = W.combo_options(OI["KSampler"], "scheduler")
    assert (drafted["denoise"], drafted["scheduler"]) == (1.0, scheduler_choices[0])
    assert wf.parameters["denoise"].default == 1.0


def test_a_list_widget_without_a_default_added_after_the_editor_file_was_saved(workflows: dict[str, W.Workflow]
                                                                                ) -> None:
    oi = copy.deepcopy(OI)
    oi["PixScaleX"] = {"input": {"required": {"image": ["IMAGE", {}], "factor": ["INT", {"default": 2}],
                                              "method": [["nearest", "bilinear"], {}]}},
                       "input_order": {"required": ["image", "factor", "method"]},
                       "output": ["IMAGE"], "output_name": ["IMAGE"], "name": "PixScaleX", "output_node": False}
    ui, _ = _editor_txt2img(workflows)
    ui["nodes"].append({"id": 77, "type": "PixScaleX", "mode": 0, "inputs": [], "outputs": [],
                        "widgets_values": [3]})  # saved when "method" did not exist yet
    node = W.editor_to_api(ui, oi)["77"]
    assert node["inputs"] == {"factor": 3, "method": "nearest"}


def test_a_checkpoint_the_backend_lacks_is_not_the_drafted_default(tmp_path: Path,
                                                                   workflows: dict[str, W.Workflow]) -> None:
    # a shared graph names its author's file; as the default, every call that leaves it out would be refused
    graph = copy.deepcopy(workflows["txt2img"].graph)
    graph["4"]["inputs"]["ckpt_name"] = "someone_elses_model.safetensors"
    ckpt = _draft_and_load(tmp_path, graph, "shared_ckpt").parameters["ckpt_name"]
    assert ckpt.default == "tiny.safetensors" and "someone_elses_model.safetensors" in ckpt.description
    # one the backend has stays the default
    graph["4"]["inputs"]["ckpt_name"] = "tiny.safetensors"
    assert _draft_and_load(tmp_path, graph, "own_ckpt").parameters["ckpt_name"].default == "tiny.safetensors"


def test_prompts_are_drafted_under_the_names_every_client_uses(tmp_path: Path,
                                                               workflows: dict[str, W.Workflow]) -> None:
    # each CLIPTextEncode's text was "text" and "text_7"; which one is the negative, only the links say
    wf = _draft_and_load(tmp_path, copy.deepcopy(workflows["txt2img"].graph), "prompts")
    ksampler = workflows["txt2img"].graph["3"]["inputs"]
    assert wf.parameters["prompt"].targets[0].node == ksampler["positive"][0]
    assert wf.parameters["negative_prompt"].targets[0].node == ksampler["negative"][0]
    assert "text" not in wf.parameters and "text_7" not in wf.parameters
    # through a ControlNet between the text and the sampler too
    ai = _draft_and_load(tmp_path, copy.deepcopy(workflows["pixel_art_ai"].graph), "ai_prompts",
                         object_info_for(["tiny.safetensors"], ["example.png"]))
    assert {"prompt", "negative_prompt"} <= set(ai.parameters)


def test_a_prompt_whose_conditioning_is_also_zeroed_out_as_the_negative_is_the_prompt(
        tmp_path: Path, workflows: dict[str, W.Workflow]) -> None:
    # ComfyUI's own Flux / Z-Image / Qwen-Image templates: one text encoder feeds the sampler's positive, and through
    # ConditioningZeroOut its negative; the text reached both sides, so it was drafted as "text"
    graph = copy.deepcopy(workflows["txt2img"].graph)
    ksampler = graph["3"]["inputs"]
    positive = ksampler["positive"][0]
    del graph[ksampler["negative"][0]]
    graph["90"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": [positive, 0]}}
    ksampler["negative"] = ["90", 0]
    wf = _draft_and_load(tmp_path, graph, "zeroed")
    assert wf.parameters["prompt"].targets[0].node == positive
    assert "text" not in wf.parameters and "negative_prompt" not in wf.parameters


def test_one_primitive_driving_several_widgets_is_one_parameter(tmp_path: Path,
                                                                workflows: dict[str, W.Workflow]) -> None:
    # a PrimitiveNode titled "size" drives the latent's width and height: one value in the editor, so one
    # parameter setting both (it was two, width and height, that a call could set apart)
    ui, _ = _editor_txt2img(workflows)
    latent = next(n for n in ui["nodes"] if n["type"] == "EmptyLatentImage")
    first = max(lk[0] for lk in ui["links"]) + 1
    latent["inputs"] = [*latent.get("inputs", []),
                        {"name": "width", "type": "INT", "link": first, "widget": {"name": "width"}},
                        {"name": "height", "type": "INT", "link": first + 1, "widget": {"name": "height"}}]
    ui["nodes"].append({"id": 95, "type": "PrimitiveNode", "title": "size", "mode": 0, "inputs": [],
                        "outputs": [{"name": "INT", "type": "INT", "links": [first, first + 1],
                                     "widget": {"name": "width"}}], "widgets_values": [320, "fixed"]})
    ui["links"] += [[first, 95, 0, latent["id"], len(latent["inputs"]) - 2, "INT"],
                    [first + 1, 95, 0, latent["id"], len(latent["inputs"]) - 1, "INT"]]
    wf = _draft_and_load(tmp_path, ui, "square", OI, "EmptyLatentImage")
    size = wf.parameters["size"]
    assert size.default == 320 and {(t.node, t.input) for t in size.targets} == {(str(latent["id"]), "width"),
                                                                                (str(latent["id"]), "height")}
    assert "width" not in wf.parameters and "height" not in wf.parameters
    bound = wf.bind(wf.coerce({"size": 128}), lambda ref: None)[str(latent["id"])]["inputs"]
    assert (bound["width"], bound["height"]) == (128, 128)


@pytest.mark.parametrize("meta", [{"randomize": 5}, {"randomize": "seed"}, {"primitive": ["x"]},
                                  {"primitive": {"seed": 3}}, {"title": ["KSampler"]}])
def test_notes_in_an_api_files_meta_are_read_only_in_their_shape(tmp_path: Path, workflows: dict[str, W.Workflow],
                                                                  meta: dict) -> None:
    # editor_to_api's notes travel in _meta; an API file anyone wrote may hold anything there (a traceback before)
    graph = copy.deepcopy(workflows["txt2img"].graph)
    graph["3"]["_meta"] = meta
    graph["4"]["inputs"]["ckpt_name"] = "tiny.safetensors"
    wf = _draft_and_load(tmp_path, graph, "odd_meta", OI, "KSampler")
    assert wf.parameters["seed"].default == 0
    assert "randomize" not in json.dumps(json.loads((tmp_path / "out" / "odd_meta.json").read_text())["3"])


def _ksampler_in_a_subgraph(workflows: dict[str, W.Workflow], seed_shown: list | None) -> tuple[dict, dict]:
    """txt2img as the editor saves it after "Convert to Subgraph" on its KSampler, and the plain file."""
    plain, _ = _editor_txt2img(workflows)
    return sampler_in_a_subgraph(plain, seed_shown), plain


def _canon(graph: dict, nid: str) -> tuple:
    """A node as what it computes (its class, its values, what feeds each link), ids left out."""
    node = graph[nid]
    return (node["class_type"], tuple(sorted(
        (k, _canon(graph, v[0]) + (v[1],) if W.is_link(v) else repr(v)) for k, v in node["inputs"].items())))


def _saved(graph: dict) -> tuple:
    return _canon(graph, next(nid for nid, n in graph.items() if n["class_type"] == "SaveImage"))


def test_a_subgraph_is_flattened_as_the_frontend_queues_it(workflows: dict[str, W.Workflow]) -> None:
    # subgraphs (ComfyUI frontend 1.24+) were refused: "convert them to nodes in the editor first"
    ui, plain = _ksampler_in_a_subgraph(workflows, None)
    assert _saved(W.editor_to_api(ui, OI)) == _saved(W.editor_to_api(plain, OI))
    # the seed shown on the instance (with its control after generate) is the value that runs
    ui, plain = _ksampler_in_a_subgraph(workflows, [1234, "fixed"])
    graph = W.editor_to_api(ui, OI)
    assert next(n for n in graph.values() if n["class_type"] == "KSampler")["inputs"]["seed"] == 1234
    next(n for n in plain["nodes"] if n["type"] == "KSampler")["widgets_values"][0] = 1234
    assert _saved(graph) == _saved(W.editor_to_api(plain, OI))
    # a muted instance is left out with what it holds, as a muted node
    next(n for n in ui["nodes"] if n.get("type") == SUB_ID)["mode"] = 2
    assert "KSampler" not in {n["class_type"] for n in W.editor_to_api(ui, OI).values()}


def test_a_subgraphs_shown_widget_is_drafted_as_one_parameter_named_as_shown(tmp_path: Path,
                                                                            workflows: dict[str, W.Workflow]) -> None:
    ui, _ = _ksampler_in_a_subgraph(workflows, [77, "randomize"])
    seed = _draft_and_load(tmp_path, ui, "sub").parameters["noise_seed"]
    assert seed.random_value == seed.default == -1 and [t.input for t in seed.targets] == ["seed"]
    ui, _ = _ksampler_in_a_subgraph(workflows, [77, "fixed"])
    assert _draft_and_load(tmp_path, ui, "sub_fixed").parameters["noise_seed"].default == 77


def test_a_subgraph_that_contains_itself_is_refused_in_one_line(workflows: dict[str, W.Workflow]) -> None:
    ui, _ = _ksampler_in_a_subgraph(workflows, None)
    sub = ui["definitions"]["subgraphs"][0]
    sub["nodes"].append({"id": 9, "type": SUB_ID, "mode": 0, "inputs": [], "outputs": [{"type": "LATENT"}]})
    sub["nodes"][0]["inputs"][0]["link"] = 300
    sub["links"].append({"id": 300, "origin_id": 9, "origin_slot": 0, "target_id": 1, "target_slot": 0,
                         "type": "LATENT"})
    with pytest.raises(WorkflowError, match="nested more than 32 deep"):
        W.editor_to_api(ui, OI)
    # an instance whose definition the file lacks is named as one, not as a node type to install
    ui, _ = _ksampler_in_a_subgraph(workflows, None)
    ui["definitions"]["subgraphs"][0]["id"] = SUB_ID.replace("beef", "f00d")
    with pytest.raises(WorkflowError, match=f"instance of subgraph {SUB_ID}, which the file does not define"):
        W.editor_to_api(ui, OI)


def test_subgraphs_that_multiply_are_refused_before_they_flatten(workflows: dict[str, W.Workflow]) -> None:
    # definition k uses definition k+1 twice: 24 small definitions would flatten to 2**24 nodes
    ui, _ = _ksampler_in_a_subgraph(workflows, None)
    defs = ui["definitions"]["subgraphs"]
    for k in range(24):
        uses = f"{SUB_ID[:-4]}{k + 1:04d}" if k < 23 else SUB_ID
        defs.append({"id": f"{SUB_ID[:-4]}{k:04d}", "nodes": [
            {"id": 1, "type": uses, "mode": 0, "inputs": [], "outputs": []},
            {"id": 2, "type": uses, "mode": 0, "inputs": [], "outputs": []}], "links": []})
    ui["nodes"].append({"id": 500, "type": f"{SUB_ID[:-4]}0000", "mode": 0, "inputs": [], "outputs": []})
    with pytest.raises(WorkflowError, match="more than 20,000 nodes"):
        W.editor_to_api(ui, OI)
    # definitions of nothing but instances multiply as well: 2**24 expansions that add no node
    defs[-1]["nodes"] = []
    with pytest.raises(WorkflowError, match="more than 20,000 nodes"):
        W.editor_to_api(ui, OI)


def test_a_subgraph_whose_outputs_nothing_reads_still_runs_what_it_holds(workflows: dict[str, W.Workflow]) -> None:
    # the decode and the save moved into a subgraph with no outputs: its SaveImage is still queued
    ui, _ = _editor_txt2img(workflows)
    inside = [n for n in ui["nodes"] if n["type"] in ("VAEDecode", "SaveImage")]
    decode = next(n for n in inside if n["type"] == "VAEDecode")
    feeding = {inp["link"]: inp for inp in decode["inputs"]}
    rows = [r for r in ui["links"] if r[0] in feeding]
    inst_inputs = []
    for k, row in enumerate(rows):
        inst_inputs.append({"name": feeding[row[0]]["name"], "type": row[5], "link": row[0]})
        row[3], row[4] = 600, k  # the parent's link now ends at the instance
        feeding[row[0]]["link"] = 700 + k
    inner_links = [{"id": 700 + k, "origin_id": -10, "origin_slot": k, "target_id": decode["id"],
                    "target_slot": decode["inputs"].index(feeding[row[0]]), "type": row[5]}
                   for k, row in enumerate(rows)]
    inner_links += [{"id": r[0], "origin_id": r[1], "origin_slot": r[2], "target_id": r[3], "target_slot": r[4],
                     "type": r[5]} for r in ui["links"] if r[3] in {n["id"] for n in inside} and r[0] not in feeding]
    ui["links"] = [r for r in ui["links"] if r[3] not in {n["id"] for n in inside} or r[0] in feeding]
    ui["nodes"] = [n for n in ui["nodes"] if n not in inside]
    ui["nodes"].append({"id": 600, "type": SUB_ID, "mode": 0, "inputs": inst_inputs, "outputs": []})
    ui["definitions"] = {"subgraphs": [{"id": SUB_ID, "nodes": inside, "links": inner_links}]}
    plain, _ = _editor_txt2img(workflows)
    assert _saved(W.editor_to_api(ui, OI)) == _saved(W.editor_to_api(plain, OI))


def test_a_subgraph_link_from_a_huge_slot_costs_nothing(workflows: dict[str, W.Workflow]) -> None:
    # the outputs of a flattened node were padded up to a link's origin slot: 2**40 was a terabyte of lists
    ui, _ = _ksampler_in_a_subgraph(workflows, None)
    ui["definitions"]["subgraphs"][0]["links"][-1]["origin_slot"] = 2**40
    graph = W.editor_to_api(ui, OI)
    # the link is kept as the file says; the workflow checks name an output the node does not have
    assert next(n for n in graph.values() if n["class_type"] == "VAEDecode")["inputs"]["samples"][1] == 2**40


def test_proxy_widgets_line_up_the_instances_values(tmp_path: Path, workflows: dict[str, W.Workflow]) -> None:
    # the frontend's promoted widgets (properties.proxyWidgets, as ComfyUI's templates save them): widgets_values
    # follow its entries, ["-1", input] for a subgraph input's widget, [inner id, widget] for a widget inside
    ui, plain = _ksampler_in_a_subgraph(workflows, [0])
    inst = next(n for n in ui["nodes"] if n.get("type") == SUB_ID)
    inst["properties"] = {"proxyWidgets": [["-1", "seed"], ["1", "cfg"], ["1", "steps"]]}
    inst["widgets_values"] = [4321, "fixed", 3.5, 9]
    ks = next(n for n in W.editor_to_api(ui, OI).values() if n["class_type"] == "KSampler")["inputs"]
    assert (ks["seed"], ks["cfg"], ks["steps"]) == (4321, 3.5, 9)
    wf = _draft_and_load(tmp_path, ui, "proxied", OI, "KSampler")
    assert (wf.parameters["noise_seed"].default, wf.parameters["cfg"].default, wf.parameters["steps"].default) == (
        4321, 3.5, 9)
    # an empty widgets_values leaves the values inside as they are
    inst["widgets_values"] = []
    inside = next(n for n in plain["nodes"] if n["type"] == "KSampler")["widgets_values"]
    ks = next(n for n in W.editor_to_api(ui, OI).values() if n["class_type"] == "KSampler")["inputs"]
    assert (ks["cfg"], ks["steps"]) == (inside[3], inside[2])
