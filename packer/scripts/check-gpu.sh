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
rm -rf /run/systemd/system/docker.service.d/zz-build.conf
docker system prune -af
systemctl stop docker.service
