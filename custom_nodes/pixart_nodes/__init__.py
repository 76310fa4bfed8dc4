"""Pixart node pack for ComfyUI.

Every ``nodes_<family>.py`` module beside this file contributes its ``NODE_CLASS_MAPPINGS``; they are found by
name so that adding a feature family never means editing this file. Import errors propagate on purpose: a
broken family should show up in ComfyUI's start-up log, not vanish.

ComfyUI imports a custom-node folder under a module name made from its path (e.g.
``/root/ComfyUI/custom_nodes/pixart_nodes``). The pack's numba kernels are cached on disk beside their source, and
numba's cache records the defining module's name: code cached by ComfyUI under the path name would then fail to
load in the ``pixart`` command or the tests (which import ``pixart_nodes``), and the reverse. So whatever name we
are imported under, the code runs as the package ``pixart_nodes`` loaded from this folder, and this module only
re-exports its mappings.
"""
import importlib
import importlib.util
import os
import pkgutil
import sys

_CANONICAL = "pixart_nodes"


def _load_canonical():
    here = os.path.dirname(os.path.realpath(__file__))
    loaded = sys.modules.get(_CANONICAL)
    if loaded is not None and os.path.dirname(os.path.realpath(getattr(loaded, "__file__", "") or "")) == here:
        return loaded
    spec = importlib.util.spec_from_file_location(_CANONICAL, os.path.join(here, "__init__.py"),
                                                  submodule_search_locations=[here])
    module = importlib.util.module_from_spec(spec)
    sys.modules[_CANONICAL] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_CANONICAL]
        raise
    return module


def _collect():
    classes, names = {}, {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("nodes_"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            classes.update(getattr(module, "NODE_CLASS_MAPPINGS", {}))
            names.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {}))
    return classes, names


if __name__ != _CANONICAL:
    _pack = _load_canonical()
    importlib.import_module(f"{_CANONICAL}.routes").register()
    NODE_CLASS_MAPPINGS = _pack.NODE_CLASS_MAPPINGS
    NODE_DISPLAY_NAME_MAPPINGS = _pack.NODE_DISPLAY_NAME_MAPPINGS
else:
    def __getattr__(name):
        # The node modules (and torch with them) load only when the mappings are asked for, so the `pixart`
        # command and other users of pixart_nodes.core do not pay for them at start-up.
        if name in ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"):
            global NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
            NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = _collect()
            return globals()[name]
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
