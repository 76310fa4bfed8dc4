"""Editor files with subgraphs, made as the ComfyUI frontend (1.24+) saves them after "Convert to Subgraph": the
definition in `definitions.subgraphs` (links as objects; -10 is the subgraph's input node, -20 its output node),
and an instance node whose type is the definition's id."""
from __future__ import annotations

import copy
from typing import Any

SUB_ID = "6a0c4d1e-0000-4000-8000-00000000beef"


def sampler_in_a_subgraph(plain: dict[str, Any], seed_shown: list[Any] | None) -> dict[str, Any]:
    """`plain` with its KSampler inside a subgraph whose inputs are the sampler's linked inputs and, where
    `seed_shown` is given, its seed shown as the instance's widget "noise seed" with those widgets_values (the
    sampler inside keeps its own stale seed, as the frontend leaves it)."""
    ui = copy.deepcopy(plain)
    inst = next(n for n in ui["nodes"] if n["type"] == "KSampler")
    inner = {**copy.deepcopy(inst), "id": 1}
    rows, inputs = [], []
    for slot, inp in enumerate(inst["inputs"]):
        rows.append({"id": 100 + slot, "origin_id": -10, "origin_slot": slot, "target_id": 1, "target_slot": slot,
                     "type": inp["type"]})
        inner["inputs"][slot]["link"] = 100 + slot
        inputs.append({"name": inp["name"], "type": inp["type"], "link": inp["link"]})
    if seed_shown is not None:
        slot = len(inputs)
        inner["inputs"].append({"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 100 + slot})
        rows.append({"id": 100 + slot, "origin_id": -10, "origin_slot": slot, "target_id": 1,
                     "target_slot": len(inner["inputs"]) - 1, "type": "INT"})
        inputs.append({"name": "seed", "label": "noise seed", "type": "INT", "widget": {"name": "seed"},
                       "link": None})
    inner["outputs"] = [{"name": "LATENT", "type": "LATENT", "links": [200]}]
    rows.append({"id": 200, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "LATENT"})
    inst.update(type=SUB_ID, inputs=inputs, widgets_values=seed_shown or [])
    ui["definitions"] = {"subgraphs": [{"id": SUB_ID, "name": "sampler", "nodes": [inner], "links": rows,
                                        "inputs": [], "outputs": [], "widgets": []}]}
    return ui
