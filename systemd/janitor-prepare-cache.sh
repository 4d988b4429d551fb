#!/usr/bin/env bash
# Finds the blank EBS volume meant for the layer cache and formats it ext4 with the label
# janitor-cache. The volume is chosen by identity: an NVMe disk whose model is "Amazon Elastic
# Block Store" (instance-store NVMe disks, "Amazon EC2 NVMe Instance Storage", as on a g5, are
# never chosen), not the root disk, with no partition and no filesystem. On Xen instances
# (no NVMe model) a single blank non-root disk is taken. Never touches a disk that has
# partitions or a filesystem.
#
# For tests: JANITOR_SYSFS (default /sys), JANITOR_DEV (default /dev), JANITOR_ROOT_DISK (the
# root disk's name), JANITOR_BLKID (a blkid stand-in), JANITOR_PREPARE_DRY_RUN=1 (print the
# decision instead of formatting).
set -euo pipefail

label=janitor-cache
sysfs="${JANITOR_SYSFS:-/sys}"
dev="${JANITOR_DEV:-/dev}"
blkid="${JANITOR_BLKID:-blkid}"
ebs_model="Amazon Elastic Block Store"

if [ -e "$dev/disk/by-label/$label" ]; then
  echo "janitor-prepare-cache: $dev/disk/by-label/$label already exists"
  exit 0
fi
root_disk="${JANITOR_ROOT_DISK:-$(lsblk -no PKNAME "$(findmnt -no SOURCE /)" | head -n1)}"

ebs=()
unknown=()
skipped=()
for path in "$sysfs"/block/*; do
  name=$(basename "$path")
  case "$name" in loop* | ram* | zram* | sr* | dm-* | md*) continue ;; esac
  [ "$name" = "$root_disk" ] && continue
  model=""
  [ -r "$path/device/model" ] && model=$(tr -s ' ' <"$path/device/model" | sed 's/ *$//')
  if compgen -G "$path/${name}*" >/dev/null; then
    skipped+=("$name (has partitions)")
    continue
  fi
  if [ -n "$("$blkid" -o value -s TYPE "$dev/$name" 2>/dev/null || true)" ]; then
    skipped+=("$name (has a filesystem)")
    continue
  fi
  case "$model" in
    "$ebs_model") ebs+=("$name") ;;
    "") unknown+=("$name") ;;
    *) skipped+=("$name ($model)") ;;
  esac
done

if [ "${#ebs[@]}" -eq 1 ]; then
  disk="${ebs[0]}"
elif [ "${#ebs[@]}" -eq 0 ] && [ "${#unknown[@]}" -eq 1 ]; then
  disk="${unknown[0]}"
else
  echo "janitor-prepare-cache: expected exactly one blank EBS volume for the cache; EBS: ${ebs[*]:-none}; unidentified: ${unknown[*]:-none}; passed over: ${skipped[*]:-none}" >&2
  exit 1
fi
if [ "${JANITOR_PREPARE_DRY_RUN:-0}" = 1 ]; then
  echo "janitor-prepare-cache: would format $dev/$disk as $label (passed over: ${skipped[*]:-none})"
  exit 0
fi
echo "janitor-prepare-cache: formatting $dev/$disk as $label (passed over: ${skipped[*]:-none})"
mkfs.ext4 -q -L "$label" -m 0 -i 16384 "$dev/$disk"
udevadm settle
