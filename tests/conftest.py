"""Shared fixtures: the ComfyUI protocol double and the real-ComfyUI harness live in tests/support/."""
from tests.support.fixtures import *  # noqa: F401,F403
