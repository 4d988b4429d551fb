#!/usr/bin/env bash
# Finds the blank EBS volume meant for the layer cache (the only unpartitioned disk without a
# filesystem besides the root disk) and formats it ext4 with the label janitor-cache.
# Never touches a disk that has partitions or a filesystem.
set -euo pipefail

label=janitor-cache
if [ -e "/dev/disk/by-label/$label" ]; then
  echo "janitor-prepare-cache: /dev/disk/by-label/$label already exists"
  exit 0
fi
root_disk=$(lsblk -no PKNAME "$(findmnt -no SOURCE /)" | head -n1)
candidates=()
while read -r name type fstype; do
  [ "$type" = disk ] || continue
  [ "$name" = "$root_disk" ] && continue
  [ -z "$fstype" ] || continue
  if [ "$(lsblk -no NAME "/dev/$name" | wc -l)" -gt 1 ]; then
    continue
  fi
  candidates+=("$name")
done < <(lsblk -dno NAME,TYPE,FSTYPE)
if [ "${#candidates[@]}" -ne 1 ]; then
  echo "janitor-prepare-cache: expected exactly one blank disk for the cache, found ${#candidates[@]}: ${candidates[*]:-none}" >&2
  exit 1
fi
echo "janitor-prepare-cache: formatting /dev/${candidates[0]} as $label"
mkfs.ext4 -q -L "$label" -m 0 -i 16384 "/dev/${candidates[0]}"
udevadm settle
