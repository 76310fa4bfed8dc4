"""Workflows: versioned ComfyUI API graphs plus manifests naming their parameters and outputs.

Format: workflows/README.md and workflows/manifest.schema.json. Parts: `manifest` (the format as a model),
`workflow` (a loaded workflow: request model, binding), `loader` (folders), `graph` (links and reachability),
`object_info` (checks against a backend), `editor` (the editor's format, both ways), `draft` (a manifest drafted
for a tuned graph). Nothing here knows a node id: every id comes from a manifest. Command line: `__main__`.
"""
from __future__ import annotations

from pathlib import Path

from .editor import editor_json_text, editor_to_api, export_editor
from .graph import ancestors, check_graph, dependents, is_link, name_saved_files, node_number, topological
from .loader import get_workflow, load_workflow, load_workflows
from .manifest import OUTPUT_TYPES, PARAM_TYPES, Manifest, Output, Parameter, Target
from .object_info import (check_object_info, choices_in, combo_options, execution_targets, input_spec,
                          missing_node_types, output_nodes)
from .workflow import LORA_LIST, WEBSOCKET_IMAGE_CLASSES, Workflow, resolve_loras, short_list

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_WORKFLOWS_DIR = REPO_ROOT / "workflows"
DEFAULT_EDITOR_DIR = REPO_ROOT / "custom_nodes" / "pixart_nodes" / "example_workflows"
SCHEMA_FILE = DEFAULT_WORKFLOWS_DIR / "manifest.schema.json"


def main(argv: list[str] | None = None) -> int:
    from .__main__ import main as run

    return run(argv)


__all__ = [
    "DEFAULT_WORKFLOWS_DIR", "DEFAULT_EDITOR_DIR", "SCHEMA_FILE", "OUTPUT_TYPES", "PARAM_TYPES",
    "LORA_LIST", "WEBSOCKET_IMAGE_CLASSES", "Manifest", "Output", "Parameter", "Target", "Workflow", "ancestors",
    "check_graph", "resolve_loras",
    "check_object_info", "combo_options", "dependents", "editor_json_text", "editor_to_api", "execution_targets",
    "export_editor", "get_workflow", "input_spec", "is_link", "choices_in", "load_workflow", "load_workflows",
    "main", "missing_node_types", "name_saved_files", "node_number", "output_nodes", "short_list", "topological",
]
