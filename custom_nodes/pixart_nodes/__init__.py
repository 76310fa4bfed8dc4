"""Pixart node pack for ComfyUI.

Every ``nodes_<family>.py`` module beside this file contributes its ``NODE_CLASS_MAPPINGS``; they are found by
name so that adding a feature family never means editing this file. Import errors propagate on purpose: a
broken family should show up in ComfyUI's start-up log, not vanish.
"""
import importlib
import pkgutil

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("nodes_"):
        _module = importlib.import_module(f"{__name__}.{_info.name}")
        NODE_CLASS_MAPPINGS.update(getattr(_module, "NODE_CLASS_MAPPINGS", {}))
        NODE_DISPLAY_NAME_MAPPINGS.update(getattr(_module, "NODE_DISPLAY_NAME_MAPPINGS", {}))

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
