# DreamerV3 in a container. Not built on the project's machines (no Docker
# engine there); tests/test_dockerfile.py checks the files it copies and that
# the commands below are the README's.
#
# Build the CPU image (default):
#   docker build -t dreamerv3 .
# Build the GPU image (JAX with its CUDA 12 wheels; the host needs the NVIDIA
# driver and the NVIDIA Container Toolkit):
#   docker build -t dreamerv3-gpu --build-arg JAX_EXTRA=cuda12 .
# A CUDA base image works too; Python is then installed from apt:
#   docker build -t dreamerv3-gpu --build-arg JAX_EXTRA=cuda12 --build-arg BASE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 .
#
# Train on Crafter (the default command); logs and checkpoints go to ~/logdir
# on the host, and rerunning the command resumes:
#   docker run -it --rm -v ~/logdir:/logdir dreamerv3 python dreamerv3/train.py --configs crafter --run.logdir /logdir/crafter
# On a GPU, add --gpus all and use the dreamerv3-gpu image:
#   docker run -it --rm --gpus all -v ~/logdir:/logdir dreamerv3-gpu python dreamerv3/train.py --configs crafter --run.logdir /logdir/crafter

ARG BASE=python:3.11-slim
FROM ${BASE}

# '' installs JAX for the CPU; 'cuda12' installs jax[cuda12].
ARG JAX_EXTRA=

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    MUJOCO_GL=osmesa \
    PYOPENGL_PLATFORM=osmesa \
    PATH=/opt/venv/bin:$PATH

# libosmesa6: software OpenGL, so MuJoCo renders DMC images without a display.
# CUDA base images lack Python; python:3.x images already have it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libosmesa6 libgl1 libglib2.0-0 \
 && if ! command -v python3 >/dev/null; then \
      apt-get install -y --no-install-recommends python3 python3-pip python3-venv; \
    fi \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv \
 && pip install --upgrade pip \
 && if [ -n "$JAX_EXTRA" ]; then pip install "jax[$JAX_EXTRA]"; fi

# The project directory is the working directory, so dreamerv3/train.py and
# example.py run by their relative paths.
WORKDIR /dreamerv3
COPY setup.py requirements.txt README.md configs.yaml example.py ./
COPY dreamerv3/ dreamerv3/
COPY embodied/ embodied/
COPY scripts/ scripts/
RUN pip install ".[dmc,atari,plot]"

CMD ["python", "dreamerv3/train.py", "--configs", "crafter", "--run.logdir", "/logdir/crafter"]
