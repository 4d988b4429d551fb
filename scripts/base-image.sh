#!/usr/bin/env bash
# Makes a tiny base image offline from Debian's busybox-static, for tests and `make demo`
# (the machine reaches no container registry). Does nothing when the image exists.
set -euo pipefail

image="${1:-janitor-test-base:latest}"
busybox="${BUSYBOX:-$(command -v busybox || echo /bin/busybox)}"

if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi
if [ ! -x "$busybox" ]; then
  echo "base-image.sh: no busybox at $busybox; install Debian's busybox-static (apt-get install busybox-static)" >&2
  exit 1
fi
if ! "$busybox" --list >/dev/null 2>&1; then
  echo "base-image.sh: $busybox is not a busybox binary" >&2
  exit 1
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/root"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
chmod 1777 "$root/tmp"
tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$image" >/dev/null
echo "base-image.sh: built $image from $busybox"
