# Pixart for x86-64 servers: the API bridge plus a ComfyUI it starts and supervises, with the Pixart node pack.
#
#   docker build -t pixart .
#   docker run --gpus all -p 8000:8000 -v pixart-data:/data -v /srv/models:/models pixart
#
# /models holds ComfyUI model folders (checkpoints/, controlnet/, loras/, vae/, axera/, ...; see
# deploy/docker-extra-model-paths.yaml). Without --gpus, ComfyUI runs on the CPU. The Axera nodes use onnxruntime
# on the .onnx exports here: the axengine NPU runtime only exists on Axera boards (see docs/raspberry-pi.md).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git: install.py clones ComfyUI (pinned v0.3.64)
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 pixart \
    && mkdir -p /data /models/axera \
    && chown -R pixart:pixart /data /models

WORKDIR /opt/pixart
# Only what the install needs, so a local .venv or data/ never ends up in the image.
COPY pyproject.toml README.md install.py ./
COPY bridge/ bridge/
COPY custom_nodes/ custom_nodes/
COPY workflows/ workflows/
COPY deploy/ deploy/

# .venv with the project (onnxruntime and tokenizers included), ComfyUI and its requirements, the node-pack link
RUN python3 install.py --comfyui /opt/ComfyUI \
    && chown -R pixart:pixart /opt/pixart /opt/ComfyUI

USER pixart
ENV BRIDGE_HOST=0.0.0.0 \
    BRIDGE_PORT=8000 \
    BRIDGE_DATA_DIR=/data \
    COMFYUI_DIR=/opt/ComfyUI \
    COMFYUI_EXTRA_MODEL_PATHS=/opt/pixart/deploy/docker-extra-model-paths.yaml \
    PIXART_AXERA_MODEL_DIR=/models/axera

VOLUME ["/data", "/models"]
EXPOSE 8000

# /health answers 503 until ComfyUI is up; its first start (and model loading) can take minutes
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["/opt/pixart/.venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

# No COMFYUI_URL: the bridge starts ComfyUI from COMFYUI_DIR itself and restarts it if it dies.
CMD ["/opt/pixart/.venv/bin/python", "-m", "bridge"]
