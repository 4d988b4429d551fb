#!/usr/bin/env bash
# Makes, offline, the image the runpod-shaped test and example workers build FROM: a Debian bookworm rootfs
# from mmdebstrap (Debian's packages: python3 and pip) imported into Docker, with the real
# `runpod` package installed `--no-index` from wheels `pip download`ed on this machine. The
# machine reaches Debian's archive and PyPI but no container registry. Does nothing when the
# image exists; the tag carries the runpod version, so a new pin builds a new image.
#
#   scripts/runpod-image.sh          builds janitor-runpod-base:<version> (the pin in testkit/runpod-requirements.txt)
#   scripts/runpod-image.sh 1.3.3    builds janitor-runpod-base:1.3.3 (an older SDK whose server mode differs)
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=testkit/runpod-requirements.txt
if [ -n "${1:-}" ]; then
  if ! [[ "$1" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "runpod-image.sh: the version must be X.Y.Z, got '$1'" >&2
    exit 1
  fi
  pinned=$(mktemp)
  trap 'rm -f "$pinned"' EXIT
  echo "runpod==$1" >"$pinned"
  requirements=$pinned
fi
version=$(sed -n 's/^runpod==//p' "$requirements")
if [ -z "$version" ]; then
  echo "runpod-image.sh: $requirements must pin runpod (runpod==X.Y.Z)" >&2
  exit 1
fi
image="janitor-runpod-base:$version"
python_image="janitor-python-base:bookworm"
suite=bookworm
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi
for tool in mmdebstrap python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "runpod-image.sh: $tool is missing; run scripts/test-deps.sh (apt-get install -y mmdebstrap)" >&2
    exit 1
  fi
done

work=$(mktemp -d)
trap 'rm -rf "$work" ${pinned:+"$pinned"}' EXIT

if ! docker image inspect "$python_image" >/dev/null 2>&1; then
  echo "runpod-image.sh: making a Debian $suite rootfs with python3 ($mirror)"
  mmdebstrap --quiet --variant=apt --include=python3,python3-pip,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$suite" "$work/rootfs.tar" "$mirror"
  docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV PYTHONUNBUFFERED=1' -c 'CMD ["python3"]' "$work/rootfs.tar" "$python_image" >/dev/null
  rm -f "$work/rootfs.tar"
fi

# The image's Python decides which wheels fit; pip on this machine downloads for it.
py=$(docker run --rm "$python_image" python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
echo "runpod-image.sh: downloading runpod $version and its dependencies for Python $py"
pip=(python3 -m pip)
if [ -x .venv/bin/pip ]; then pip=(.venv/bin/pip); fi
mkdir -p "$work/context/wheels"
"${pip[@]}" download --quiet --disable-pip-version-check --only-binary=:all: \
  --python-version "$py" --implementation cp --abi "cp${py/./}" \
  --platform manylinux_2_36_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform linux_x86_64 \
  -d "$work/context/wheels" -r "$requirements"
cp "$requirements" "$work/context/requirements.txt"
cat >"$work/context/Dockerfile" <<EOF
FROM $python_image
COPY wheels /tmp/wheels
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-index --find-links /tmp/wheels --break-system-packages --root-user-action=ignore \
      --disable-pip-version-check -q -r /tmp/requirements.txt \
 && rm -rf /tmp/wheels /root/.cache \
 && python3 -c 'import runpod; print("runpod", runpod.__version__)'
EOF
if ! DOCKER_BUILDKIT=0 docker build -q -t "$image" "$work/context" >/dev/null 2>"$work/build.log"; then
  cat "$work/build.log" >&2
  echo "runpod-image.sh: the build of $image failed" >&2
  exit 1
fi
echo "runpod-image.sh: built $image"
