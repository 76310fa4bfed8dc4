"""Spies on the bridge's side of the ComfyUI protocol: they count requests and let them through."""
from __future__ import annotations

from typing import Any

import pytest


class Reads:
    """Counts the engine's /history and /view requests to ComfyUI (they still go through)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from bridge.engine.client import ComfyClient

        self.history = self.view = 0
        history, view = ComfyClient.history, ComfyClient.view

        async def counted_history(client: ComfyClient, *args: Any, **kwargs: Any) -> Any:
            self.history += 1
            return await history(client, *args, **kwargs)

        async def counted_view(client: ComfyClient, *args: Any, **kwargs: Any) -> Any:
            self.view += 1
            return await view(client, *args, **kwargs)

        monkeypatch.setattr(ComfyClient, "history", counted_history)
        monkeypatch.setattr(ComfyClient, "view", counted_view)
