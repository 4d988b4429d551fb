#!/usr/bin/env bash
# Runs on the Packer build instance as root: NVIDIA driver and container toolkit, Docker, the
# SSM agent, git, janitord and its systemd units.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

apt-get update -q
apt-get install -y -q ca-certificates curl gnupg git jq "${NVIDIA_DRIVER:-nvidia-driver-580-server-open}"

# Docker Engine from Docker's repository, pinned: janitord builds with the engine's built-in
# BuildKit, and the Dockerfile frontend built into Engine 23 and later (1.4+) is what parses
# heredocs (`RUN <<EOT`) without pulling a `# syntax=` image. check-gpu.sh proves both on the
# build instance; janitord negotiates the API version, so a newer pin needs no code change.
DOCKER_VERSION="${DOCKER_VERSION:-5:27.5.1-1~ubuntu.24.04~noble}"
install -d -m 0755 /etc/apt/keyrings
curl -fsSL https://download.docker.com/linux/ubuntu/gpg -o /etc/apt/keyrings/docker.asc
echo "deb [arch=$(dpkg --print-architecture) signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/ubuntu noble stable" \
  >/etc/apt/sources.list.d/docker.list
apt-get update -q
apt-get install -y -q "docker-ce=${DOCKER_VERSION}" "docker-ce-cli=${DOCKER_VERSION}" containerd.io docker-buildx-plugin
apt-mark hold docker-ce docker-ce-cli

# NVIDIA container toolkit, from NVIDIA's repository.
curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey \
  | gpg --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list \
  | sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://#g' \
  >/etc/apt/sources.list.d/nvidia-container-toolkit.list
apt-get update -q
apt-get install -y -q nvidia-container-toolkit
nvidia-ctk runtime configure --runtime=docker

# The SSM agent ships as a snap on Ubuntu's AWS images; make sure it runs.
snap list amazon-ssm-agent >/dev/null 2>&1 || snap install amazon-ssm-agent --classic
systemctl enable snap.amazon-ssm-agent.amazon-ssm-agent.service

# janitord and its units.
install -m 0755 /tmp/janitord /usr/local/bin/janitord
install -m 0755 /tmp/janitor-systemd/janitor-deadman.sh /usr/local/bin/janitor-deadman
install -m 0755 /tmp/janitor-systemd/janitor-prepare-cache.sh /usr/local/bin/janitor-prepare-cache
install -d -m 0755 /etc/janitor /var/lib/janitor /etc/systemd/system/docker.service.d
install -m 0644 /tmp/janitor-systemd/deadman.env /etc/janitor/deadman.env
for unit in janitord.service janitor-deadman.service janitor-deadman.timer janitor-prepare-cache.service var-lib-janitor.mount; do
  install -m 0644 "/tmp/janitor-systemd/$unit" "/etc/systemd/system/$unit"
done
install -m 0644 /tmp/janitor-systemd/docker.service.d/janitor.conf /etc/systemd/system/docker.service.d/janitor.conf
# /tmp and /var/tmp keep a day (seed 004's table): systemd-tmpfiles-clean.timer removes the rest.
install -m 0644 /tmp/janitor-systemd/tmpfiles.d/tmp.conf /etc/tmpfiles.d/tmp.conf
systemctl daemon-reload
systemctl enable var-lib-janitor.mount janitor-deadman.timer janitord.service docker.service

# Journald keeps three days; the daemon vacuums too.
mkdir -p /etc/systemd/journald.conf.d
printf '[Journal]\nMaxRetentionSec=3day\n' >/etc/systemd/journald.conf.d/janitor.conf

apt-get clean
rm -rf /var/lib/apt/lists/* /tmp/janitord /tmp/janitor-systemd
