#!/usr/bin/env bash
# After the reboot: the driver sees a GPU, and so does a container (the toolkit works).
# The build instance has no cache volume, so Docker runs from its default data root here.
set -euo pipefail
systemctl stop docker.service
mkdir -p /run/systemd/system/docker.service.d
printf '[Unit]\nRequiresMountsFor=\n[Service]\nExecStart=\nExecStart=/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock\n' \
  >/run/systemd/system/docker.service.d/zz-build.conf
systemctl daemon-reload
systemctl start docker.service
nvidia-smi -L
cuda=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n1)
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n1)
echo "check-gpu: driver $driver supports CUDA ${cuda:-unknown}"
case "$cuda" in
  1[3-9].* | [2-9][0-9].*) ;;
  *) echo "check-gpu: the driver supports CUDA ${cuda:-unknown}; the users' CUDA 13 images need 13.0 or later" >&2; exit 1 ;;
esac
gpus=$(docker run --rm --gpus all ubuntu:24.04 nvidia-smi -L | grep -c '^GPU ')
if [ "$gpus" -lt 1 ]; then
  echo "check-gpu: a container sees no GPU" >&2
  exit 1
fi
echo "check-gpu: a container sees $gpus GPU(s)"
/usr/local/bin/janitord gpu-check
# The pinned engine builds heredocs with its built-in frontend (what janitord's builds rely on).
engine=$(docker version --format '{{.Server.Version}}')
case "$engine" in
  2[3-9].* | [3-9][0-9].*) ;;
  *) echo "check-gpu: Docker Engine $engine; heredoc builds need 23.0 or later" >&2; exit 1 ;;
esac
probe=$(mktemp -d)
printf 'FROM ubuntu:24.04\nRUN <<EOT\necho heredoc-ok > /ok\nEOT\n' >"$probe/Dockerfile"
DOCKER_BUILDKIT=1 docker build -q -t janitor-check:heredoc "$probe" >/dev/null
docker rmi janitor-check:heredoc >/dev/null
rm -rf "$probe"
echo "check-gpu: Docker Engine $engine builds heredocs with BuildKit"
rm -rf /run/systemd/system/docker.service.d/zz-build.conf
docker system prune -af
systemctl stop docker.service
