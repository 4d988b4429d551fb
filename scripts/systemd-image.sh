#!/usr/bin/env bash
# Makes, offline, the image the deployment tests boot as an instance: a Debian bookworm rootfs
# from mmdebstrap with systemd as PID 1 and what janitord and its units call on an instance
# (git, journalctl, logger, timeout, systemd-tmpfiles), imported into Docker. The tests install
# the project's own files from systemd/ into it, unchanged, and janitord beside them. Does
# nothing when the image exists; the tag carries a hash of this script, so a change of the
# package list builds a new image.
#
#   scripts/systemd-image.sh           builds janitor-systemd-box:<hash> and prints the tag
set -euo pipefail
cd "$(dirname "$0")/.."

packages=systemd,systemd-sysv,dbus,git,ca-certificates,procps,util-linux,coreutils,bash
hash=$(sha256sum "$0" | cut -c1-12)
image="janitor-systemd-box:$hash"
suite=bookworm
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi
if ! command -v mmdebstrap >/dev/null 2>&1; then
  echo "systemd-image.sh: mmdebstrap is missing; run scripts/test-deps.sh (apt-get install -y mmdebstrap)" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "systemd-image.sh: making a Debian $suite rootfs with systemd ($mirror)" >&2
# Units a container has no use for (and which would fail there) are masked; the rest boot as
# on an instance. The hooks' "$1" is mmdebstrap's: the rootfs it is making.
# shellcheck disable=SC2016
mmdebstrap --quiet --variant=minbase --include="$packages" \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='chroot "$1" systemctl mask systemd-firstboot.service systemd-udevd.service systemd-udevd-kernel.socket systemd-udevd-control.socket getty@tty1.service console-getty.service systemd-logind.service' \
  --customize-hook='echo janitor-box > "$1/etc/hostname"' \
  --customize-hook='rm -f "$1/etc/machine-id" && touch "$1/etc/machine-id"' \
  "$suite" "$work/rootfs.tar" "$mirror" >&2
docker import -c 'ENV container=docker' -c 'CMD ["/sbin/init"]' \
  "$work/rootfs.tar" "$image" >/dev/null
echo "$image"
