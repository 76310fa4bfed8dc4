"""Pixart API bridge: speaks app dialects over HTTP and runs every request as a ComfyUI workflow."""
__version__ = "0.1.0"
