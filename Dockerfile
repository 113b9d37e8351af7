# ldam dashboard image. CPU by default; `--build-arg DEVICE=cuda` builds on a CUDA runtime.
#   docker build -t ldam .                      (CPU)
#   docker build -t ldam --build-arg DEVICE=cuda .
# PyPI's torch wheels carry their CUDA libraries; TORCH_INDEX_URL may point pip at another
# wheel index (for example PyTorch's CPU-only wheels, for a smaller CPU image).
ARG DEVICE=cpu

FROM node:20-slim AS frontend
WORKDIR /app/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund --omit=dev

FROM python:3.11-slim AS base-cpu
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS base-cuda
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3-pip python3.11-venv \
    && rm -rf /var/lib/apt/lists/* && ln -sf /usr/bin/python3.11 /usr/local/bin/python

FROM base-${DEVICE}
ARG TORCH_SPEC="torch==2.14.1"
ARG TORCH_INDEX_URL=""
ENV PYTHONUNBUFFERED=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv && pip install --no-cache-dir --upgrade pip \
    && pip install --no-cache-dir ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "${TORCH_SPEC}"
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY server ./server
COPY models ./models
COPY frontend ./frontend
COPY --from=frontend /app/frontend/node_modules ./frontend/node_modules
# A real install, as from the wheel: the image runs the import package `ldam` alone.
RUN pip install --no-cache-dir .
EXPOSE 8000
# Inside the container the server must listen on all interfaces so the published port reaches
# it; docker-compose.yml publishes it on the host's 127.0.0.1 only, and a non-loopback bind
# requires the LDAM_TOKEN access token.
CMD ["ldam", "serve", "--host", "0.0.0.0", "--port", "8000"]
