"""Command line for workflows.

    python -m bridge.workflows validate [--dir workflows] [--url http://127.0.0.1:8188 | --object-info FILE]
    python -m bridge.workflows export-editor (--url URL | --object-info FILE) [--dir workflows] [--out DIR] [--check]
    python -m bridge.workflows new WORKFLOW.json|.png --name NAME (--url URL | --object-info FILE) [--nodes ID ...]
                                  [--out DIR] [--force]
    python -m bridge.workflows schema [--check]
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

from bridge.errors import WorkflowError

from . import DEFAULT_EDITOR_DIR, DEFAULT_WORKFLOWS_DIR, SCHEMA_FILE
from .draft import draft_manifest, read_workflow_file, write_draft
from .editor import editor_json_text, export_editor
from .loader import get_workflow, load_workflow, load_workflows
from .manifest import json_schema_text
from .object_info import check_object_info


def fetch_object_info(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url.rstrip("/") + "/object_info", timeout=60) as resp:  # noqa: S310 (operator-given URL)
        return json.loads(resp.read())


def _object_info(args: argparse.Namespace) -> dict[str, Any] | None:
    if getattr(args, "object_info", None):
        return json.loads(Path(args.object_info).read_text())
    if getattr(args, "url", None):
        return fetch_object_info(args.url)
    return None


def _backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="ComfyUI base URL whose /object_info is used")
    p.add_argument("--object-info", type=Path, help="a saved /object_info JSON instead of --url")


def _validate(args: argparse.Namespace) -> int:
    workflows = load_workflows(args.dir)
    object_info = _object_info(args)
    problems = [p for wf in workflows.values() for p in check_object_info(wf, object_info)] if object_info else []
    for line in problems:
        print(line, file=sys.stderr)
    print(f"{len(workflows)} workflows, {len(problems)} problems")
    return 1 if problems else 0


def _export_editor(args: argparse.Namespace) -> int:
    workflows = load_workflows(args.dir)
    object_info = _object_info(args)
    if object_info is None:
        print("export-editor needs --url or --object-info (input order comes from /object_info)", file=sys.stderr)
        return 2
    stale = 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or sorted(workflows):
        wf = get_workflow(workflows, name)
        try:
            text = editor_json_text(export_editor(wf, object_info))
        except WorkflowError as exc:
            if args.names:
                raise
            # a backend without an optional node pack (the caption workflows' ComfyUI-Blip...) still refreshes
            # every other copy; named on the command line, the workflow's error is the answer
            print(f"skipped {wf.name}: {exc}")
            continue
        path = args.out / f"{wf.name}.json"
        if args.check:
            if not path.exists() or path.read_text() != text:
                print(f"out of date: {path}")
                stale += 1
        else:
            path.write_text(text)
            print(f"wrote {path}")
    return 1 if stale else 0


def _new(args: argparse.Namespace) -> int:
    object_info = _object_info(args)
    if object_info is None:
        print("new needs --url or --object-info: parameter types, defaults and limits come from /object_info",
              file=sys.stderr)
        return 2
    graph = read_workflow_file(args.file, object_info)
    graph, manifest = draft_manifest(graph, object_info, name=args.name, description=args.description or "",
                                     nodes=args.nodes)
    paths = write_draft(args.out, graph, manifest, force=args.force)
    try:
        wf = load_workflow(paths[1])
    except WorkflowError:
        for p in paths:
            p.unlink(missing_ok=True)
        raise
    problems = check_object_info(wf, object_info)
    for line in problems:
        print(line, file=sys.stderr)
    for p in paths:
        print(f"wrote {p}")
    print(f"{len(wf.parameters)} parameters ({', '.join(wf.parameters)}), outputs: {', '.join(wf.outputs)}; "
          f"{len(problems)} problems. Edit the manifest (names, descriptions, limits), then restart the bridge or "
          f"POST /workflows/reload.")
    return 1 if problems else 0


def _schema(args: argparse.Namespace) -> int:
    text = json_schema_text()
    if args.check:
        if not SCHEMA_FILE.exists() or SCHEMA_FILE.read_text() != text:
            print(f"out of date: {SCHEMA_FILE} (run python -m bridge.workflows schema)")
            return 1
        return 0
    SCHEMA_FILE.write_text(text)
    print(f"wrote {SCHEMA_FILE}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bridge.workflows", description="Check, export and draft workflows.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="check every manifest against its graph (and a live ComfyUI with --url)")
    v.add_argument("--dir", type=Path, default=DEFAULT_WORKFLOWS_DIR)
    _backend_args(v)
    v.set_defaults(run=_validate)
    e = sub.add_parser("export-editor", help="write the editor-format copies into the node pack's example_workflows/")
    e.add_argument("--dir", type=Path, default=DEFAULT_WORKFLOWS_DIR)
    e.add_argument("--out", type=Path, default=DEFAULT_EDITOR_DIR)
    _backend_args(e)
    e.add_argument("--check", action="store_true", help="only report files that are out of date (exit 1 if any)")
    e.add_argument("names", nargs="*", help="workflow names (default: all)")
    e.set_defaults(run=_export_editor)
    n = sub.add_parser("new", help="draft a manifest for a workflow saved from the editor (API or editor format, "
                                   "or a PNG ComfyUI saved)")
    n.add_argument("file", type=Path)
    n.add_argument("--name", required=True, help="the workflow's name (POST /workflows/NAME)")
    n.add_argument("--description", help="one line shown to API users")
    n.add_argument("--nodes", nargs="+", help="node ids, class types or titles whose widgets become parameters "
                                              "(default: every node's)")
    n.add_argument("--out", type=Path, default=DEFAULT_WORKFLOWS_DIR, help="folder for the two files")
    n.add_argument("--force", action="store_true", help="replace existing files")
    _backend_args(n)
    n.set_defaults(run=_new)
    s = sub.add_parser("schema", help="write workflows/manifest.schema.json from the manifest model")
    s.add_argument("--check", action="store_true", help="exit 1 when the file is out of date")
    s.set_defaults(run=_schema)
    args = ap.parse_args(argv)
    try:
        return int(args.run(args))
    except WorkflowError as exc:
        print(exc.message, file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
