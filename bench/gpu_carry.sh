#!/usr/bin/env bash
# Prepare, on this (CPU) machine, what a bare GPU machine lacks for bench/gpu_run.sh (issue 15): wheels for
# Python 3.12 of every package the service and tests need beyond the GPU image's own (`.whl/`, git-ignored), and
# the shared CIFAR-10 training pack and human labels (`.data/`, git-ignored). A device call carries `.whl` for the
# check and serve phases (about 18 MB) and `.data` plus `.whl/airbench*` for the train phase (about 47 MB): the
# tree (about 19 MB) and what is carried must stay under 64 MiB a call.
# Usage: bash bench/gpu_carry.sh [../shared/data]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${TEAMING_DATA:-../shared/data}}
# What the service, the store, consensus and the tests import that the GPU image does not have (its package list:
# /work/.library/device/KINDS.md); versions as tested on the CPU.
WHEELS="a2wsgi==1.10.10 aiohttp-asgi-connector==1.2.0 aiosqlite==0.22.1 alembic==1.20.1 annotated-types==0.8.0
asgiref==3.13.0 bentoml==1.4.39 cattrs==23.1.2 click-option-group==0.5.9 crowd-kit==1.4.2 defusedxml==0.7.1
fastapi==0.165.0 greenlet==3.5.6 httpcore2==2.16.2 httpx-ws==0.9.0 httpx2==2.16.2 kantoku==0.18.3 mako==1.4.3
nltk==3.10.4 opentelemetry-api==1.45.1 opentelemetry-instrumentation==0.66b1
opentelemetry-instrumentation-aiohttp-client==0.66b1 opentelemetry-instrumentation-asgi==0.66b1
opentelemetry-sdk==1.45.1 opentelemetry-semantic-conventions==0.66b1 opentelemetry-util-http==0.66b1
pip-requirements-parser==32.0.1 psycopg==3.3.9 psycopg-binary==3.3.9 pydantic==2.14.3 pydantic-core==2.50.4
pydantic-settings==2.16.3 python-dotenv==1.2.4 python-json-logger==4.2.0 python-multipart==0.0.34 pyzmq==27.3.0
rich-toolkit==0.20.6 schema==0.7.8 simple-di==0.1.5 sqlalchemy==2.1.9 starlette==1.10.0 tomli-w==1.2.0
tornado==6.6.1 truststore==0.10.5 typing-inspection==0.4.5 tzdata==2026.6 uvicorn==0.54.0 watchfiles==1.3.0
wsproto==1.3.2"
mkdir -p .whl .data
for w in $WHEELS; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "$w"
done
ls .whl/airbench-*.whl >/dev/null 2>&1 || python3 -m pip wheel -q --no-deps --no-binary=:all: -w .whl airbench==0.1.8
cp "$DATA"/cifar10_train_jpeg.npz "$DATA"/cifar10h_counts.npz "$DATA"/cifar10n_labels.npz .data/
echo "carry for check/serve: .whl ($(du -sh .whl | cut -f1)); for train: .data ($(du -sh .data | cut -f1)) and .whl-train"
mkdir -p .whl-train && cp .whl/airbench-*.whl .whl-train/
