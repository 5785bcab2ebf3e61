#!/usr/bin/env bash
# Build the service's image with podman, from a Debian base made here (no registry needed), then run it: the
# readiness probe, one classify request and the main job. Run from the repository root, as root or rootless:
#
#   bash deploy/image/build.sh                 # -> localhost/teaming:<bento version>
#   TORCH_INDEX=https://download.pytorch.org/whl/cpu bash deploy/image/build.sh   # CPU-only torch wheels
#   PUSH=registry.example.com/teaming bash deploy/image/build.sh                  # and push it there
#
# Steps: (1) mmdebstrap a bookworm root file system with Python 3.11 (the one BentoML's Dockerfile asks for),
# `podman import` it as localhost/teaming-base:bookworm; (2) `bentoml build` with that base image;
# (3) `bentoml containerize --backend podman`; (4) `podman run` it and wait for /readyz; (5) classify a photo;
# (6) run the README's main job in it, offline.
# Extra CA certificates in /usr/local/share/ca-certificates (a proxy's) are copied into the base.
set -euo pipefail
cd "$(dirname "$0")/../.."
BENTOML_HOME=${BENTOML_HOME:-$PWD/runs/bentoml-image}
export BENTOML_HOME
WORK=${WORK:-$PWD/runs/image}
BASE=localhost/teaming-base:bookworm
PODMAN=(podman)
mkdir -p "$WORK"
if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
    # a host with cgroup v1 or hybrid cgroups (some sandboxes): crun refuses those, runc does not; and no rlimit
    # above what the host allows
    printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n[engine]\nruntime = "runc"\n' \
        > "$WORK/containers.conf"
    export CONTAINERS_CONF="$WORK/containers.conf"
fi

echo "== 1. base image $BASE (mmdebstrap bookworm, podman import)"
if ! "${PODMAN[@]}" image exists "$BASE"; then
    mmdebstrap --variant=minbase --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates,libgomp1 \
        --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
        --customize-hook='cp /usr/local/share/ca-certificates/*.crt "$1"/usr/local/share/ca-certificates/ 2>/dev/null || true' \
        --customize-hook='chroot "$1" update-ca-certificates' \
        bookworm "$WORK/base.tar"
    # uv (which BentoML's Dockerfile installs with) reads the system's certificates, the proxy's among them
    "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' --change 'ENV UV_NATIVE_TLS=1' "$WORK/base.tar" "$BASE"
    rm -f "$WORK/base.tar"
fi

echo "== 2. bento (bentofile.yaml with base image $BASE${TORCH_INDEX:+ and torch from $TORCH_INDEX})"
.venv/bin/python - "$WORK/bentofile.yaml" <<PY
import sys, yaml
spec = yaml.safe_load(open("bentofile.yaml"))
spec.setdefault("docker", {})["base_image"] = "$BASE"
if "${TORCH_INDEX:-}":
    spec["python"]["extra_index_url"] = ["${TORCH_INDEX:-}"]
yaml.safe_dump(spec, open(sys.argv[1], "w"), sort_keys=False)
PY
TAG=$(.venv/bin/bentoml build -f "$WORK/bentofile.yaml" -o tag . | tail -1 | sed 's/^__tag__://')
echo "bento $TAG"

echo "== 3. image (bentoml containerize --backend podman)"
IMAGE="localhost/$TAG"
.venv/bin/bentoml containerize --backend podman --opt network=host -t "$IMAGE" "$TAG"

echo "== 4. run it: /readyz"
NAME=teaming-image-check
"${PODMAN[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
"${PODMAN[@]}" run -d --name "$NAME" --network host \
    -e TEAMING_DB_URL=sqlite:////tmp/teaming.db -e TEAMING_CLASSIFY_TOKEN=caller-secret \
    -e TEAMING_REVIEWER_TOKENS=alice:alice-secret -e TEAMING_ADMIN_TOKEN=admin-secret "$IMAGE" --port 3300
trap '"${PODMAN[@]}" logs --tail 20 "$NAME" || true; "${PODMAN[@]}" rm -f "$NAME" >/dev/null' EXIT
for _ in $(seq 120); do
    curl -sf localhost:3300/readyz >/dev/null && break
    [ "$("${PODMAN[@]}" inspect -f '{{.State.Running}}' "$NAME")" = true ] || { echo "the container stopped"; exit 1; }
    sleep 2
done
curl -sf localhost:3300/readyz

echo "== 5. classify one photo through the image"
.venv/bin/python - <<'PY'
from teaming.client import TeamingClient
from teaming.datasets import default_test_jpegs

with TeamingClient("http://127.0.0.1:3300", "caller-secret") as c:
    print(c.classify([("image-check", default_test_jpegs([9000])[0])])[0])
PY
echo "== 6. the README's main job inside the image: evaluate the shipped model, write its teaming report"
"${PODMAN[@]}" run --rm --network none --entrypoint bash "$IMAGE" -c \
    'cd /home/bentoml/bento/src && python -m teaming.cli evaluate models/cifar10h-default \
     && python -m teaming.cli report --policy models/cifar10h-default/policy.json --out /tmp/teaming.html'
if [ -n "${PUSH:-}" ]; then "${PODMAN[@]}" push "$IMAGE" "docker://$PUSH:${TAG#*:}"; fi
echo "image $IMAGE works"
