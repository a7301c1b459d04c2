# syntax=docker/dockerfile:1
# The segmentation service (and its DICOM gateway, `python -m app.gateway`), two images
# from one file:
#
#     docker build --target cpu -t unet-service:cpu .    # python:3.11-slim + onnxruntime
#     docker build --target gpu -t unet-service:gpu .    # CUDA 13 + cuDNN 9 + onnxruntime-gpu
#
# Stages: `model` makes the default model, `*-venv` install the dependencies
# into /opt/venv, and the final `cpu` / `gpu` stages copy only the venv, the
# source and the model: no compilers, no pip cache, no torch, no pip, and none
# of the libraries' own test suites (site-packages/**/tests: 60 MB, never imported). The two final
# stages are identical below their first lines (base image, how Python gets
# there); keep them so.
#
# The default model is baked in at /app/model/unet.onnx (mount another one and
# set UNET_MODEL_PATH to override). When model/unet.onnx is not in the build
# context, the `model` stage writes the random-weight demo model instead
# (python -m deploy.demo_model, base 16); build with --build-arg DEMO_MODEL=0 to fail
# instead, for release images.

ARG PYTHON_IMAGE=python:3.11-slim
# onnxruntime-gpu 1.31 is built against CUDA 13.0 and cuDNN 9 (its wheel links
# libcudart.so.13, libcublas.so.13; extras `cuda`/`cudnn` pin nvidia-*-cu13), so
# the base image is CUDA 13 + cuDNN 9. Change ORT_GPU_VERSION and CUDA_IMAGE together.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
ARG ORT_GPU_VERSION=1.31.1

# ---------------------------------------------------------------------------
# The default model. `onnx` is needed only here, to write the demo model.
FROM ${PYTHON_IMAGE} AS model
ARG DEMO_MODEL=1
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY deploy/demo_model.py deploy/
COPY model/ model/
RUN if [ -f model/unet.onnx ]; then \
        echo "default model: model/unet.onnx from the build context"; \
    elif [ "$DEMO_MODEL" = 1 ]; then \
        echo "WARNING: model/unet.onnx is missing; baking in the random-weight DEMO model"; \
        python -m venv /tmp/onnx \
        && /tmp/onnx/bin/pip install --quiet "onnx>=1.16" "numpy>=1.26" \
        && /tmp/onnx/bin/python -m deploy.demo_model --out model/unet.onnx --base 16; \
    else \
        echo "model/unet.onnx is missing and DEMO_MODEL=0" >&2; exit 1; \
    fi

# ---------------------------------------------------------------------------
# Dependencies only (from pyproject.toml, so that editing app/ keeps this layer):
# the service runs the source tree from /app, as in a checkout.
FROM ${PYTHON_IMAGE} AS cpu-venv
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml deploy/requirements.py ./
# OpenVINO runs ONNX models on the CPU here: its GPU and NPU plugins, its other frontends
# (TensorFlow, PyTorch, Paddle, JAX, GGUF) and its C++ headers go (~70 MB).
RUN python -m venv /opt/venv \
    && python requirements.py cpu,service,dicom,gateway,dask > requirements.txt \
    && /opt/venv/bin/pip install --quiet --requirement requirements.txt \
    && /opt/venv/bin/pip uninstall --quiet --yes pip setuptools \
    && find /opt/venv -depth -type d -name tests -path "*/site-packages/*" -exec rm -rf {} + \
    && ov=$(echo /opt/venv/lib/python3*/site-packages/openvino) \
    && rm -rf "$ov/include" "$ov/cmake" \
       "$ov"/libs/libopenvino_intel_gpu_plugin.so "$ov"/libs/libopenvino_intel_npu_plugin.so \
       "$ov"/libs/libopenvino_*tensorflow*_frontend.so* "$ov"/libs/libopenvino_paddle_frontend.so* \
       "$ov"/libs/libopenvino_pytorch_frontend.so* "$ov"/libs/libopenvino_jax_frontend.so* \
       "$ov"/libs/libopenvino_gguf_frontend.so*

FROM ${PYTHON_IMAGE} AS cpu
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    NUMBA_CACHE_DIR=/tmp/numba \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORT_DISABLE_TELEMETRY=1 \
    UNET_MODEL_PATH=/app/model/unet.onnx \
    UNET_JOBS_DIR=/jobs
# /jobs: jobs, their inputs and results (SQLite + files); /state: the DICOM gateway's queue.
RUN groupadd --gid 10001 unet \
    && useradd --uid 10001 --gid unet --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin unet \
    && mkdir /jobs /state && chown 10001:10001 /jobs /state
VOLUME /jobs
WORKDIR /app
COPY --from=cpu-venv /opt/venv /opt/venv
COPY --from=model /src/model/ model/
COPY deploy/serve.py deploy/
COPY app/ app/
# Owned by root, read-only to the service user; byte-compiled now, never at run time.
RUN python -m compileall -q app deploy
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/health/ready', timeout=4)"]
# Exec form: uvicorn (via deploy/serve.py, which only makes a clean stop exit 0)
# is PID 1 and gets SIGTERM itself. It stops accepting, lets in-flight requests
# finish for up to 20 s, then exits 0. Orchestrators must wait longer than that
# before SIGKILL (compose stop_grace_period: 30s, Kubernetes
# terminationGracePeriodSeconds: 30; plain `docker stop` needs -t 30).
CMD ["python", "deploy/serve.py", "app.main:app", "--host", "0.0.0.0", "--port", "8000", \
     "--http", "h11", "--timeout-graceful-shutdown", "20", "--no-server-header"]

# ---------------------------------------------------------------------------
# GPU: the same, on NVIDIA's CUDA + cuDNN runtime (Ubuntu 24.04, Python 3.12).
# The host needs an NVIDIA driver for CUDA 13 (>= 580) and the NVIDIA container toolkit.
FROM ${CUDA_IMAGE} AS gpu-python
# DL3008 (pin apt versions): Ubuntu's archive drops superseded versions, so a pin
# breaks the build within weeks; the CUDA tag already fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

FROM gpu-python AS gpu-venv
ARG ORT_GPU_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml deploy/requirements.py ./
RUN python3 -m venv /opt/venv \
    && python3 requirements.py gpu,service,dicom,gateway,dask > requirements.txt \
    && echo "onnxruntime-gpu==${ORT_GPU_VERSION}" > constraints.txt \
    && /opt/venv/bin/pip install --quiet --requirement requirements.txt \
       --constraint constraints.txt \
    && /opt/venv/bin/pip uninstall --quiet --yes pip setuptools \
    && find /opt/venv -depth -type d -name tests -path "*/site-packages/*" -exec rm -rf {} +

FROM gpu-python AS gpu
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    NUMBA_CACHE_DIR=/tmp/numba \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORT_DISABLE_TELEMETRY=1 \
    UNET_MODEL_PATH=/app/model/unet.onnx \
    UNET_JOBS_DIR=/jobs
# /jobs: jobs, their inputs and results (SQLite + files); /state: the DICOM gateway's queue.
RUN groupadd --gid 10001 unet \
    && useradd --uid 10001 --gid unet --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin unet \
    && mkdir /jobs /state && chown 10001:10001 /jobs /state
VOLUME /jobs
WORKDIR /app
COPY --from=gpu-venv /opt/venv /opt/venv
COPY --from=model /src/model/ model/
COPY deploy/serve.py deploy/
COPY app/ app/
RUN python -m compileall -q app deploy
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/health/ready', timeout=4)"]
CMD ["python", "deploy/serve.py", "app.main:app", "--host", "0.0.0.0", "--port", "8000", \
     "--http", "h11", "--timeout-graceful-shutdown", "20", "--no-server-header"]
