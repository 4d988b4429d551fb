#!/usr/bin/env bash
# Builds janitor's agent image (agent/) with the claude-agent-sdk wheel downloaded on this
# machine, so no registry is needed at build time: by default FROM janitor-python-base:bookworm
# (Debian's Python, made by scripts/runpod-image.sh); `AGENT_BASE=python:3.12-slim-bookworm`
# where a registry is reachable. Docker's layer cache makes a rebuild of unchanged sources
# quick, so it always builds.
#
#   scripts/agent-image.sh [TAG]    (default janitor-agent:latest)
set -euo pipefail
cd "$(dirname "$0")/.."

tag="${1:-janitor-agent:latest}"
base="${AGENT_BASE:-janitor-python-base:bookworm}"
version=$(sed -n 's/^ARG CLAUDE_AGENT_SDK_VERSION=//p' agent/Dockerfile)
if [ -z "$version" ]; then
  echo "agent-image.sh: agent/Dockerfile must pin ARG CLAUDE_AGENT_SDK_VERSION=X.Y.Z" >&2
  exit 1
fi
if [ "$base" = janitor-python-base:bookworm ] && ! docker image inspect "$base" >/dev/null 2>&1; then
  bash scripts/runpod-image.sh
fi

cache="${XDG_CACHE_HOME:-$HOME/.cache}/janitor/wheels"
mkdir -p "$cache"
wheel=$(find "$cache" -maxdepth 1 -name "claude_agent_sdk-$version-*.whl" | head -n 1)
if [ -z "$wheel" ]; then
  echo "agent-image.sh: downloading claude-agent-sdk $version (the Claude Code CLI is inside its wheel)"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux_2_17_x86_64 --python-version 3.11 -d "$cache" "claude-agent-sdk==$version"
  wheel=$(find "$cache" -maxdepth 1 -name "claude_agent_sdk-$version-*.whl" | head -n 1)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r agent/. "$work/"
rm -f "$work"/wheels/*.whl
ln "$wheel" "$work/wheels/" 2>/dev/null || cp "$wheel" "$work/wheels/"
docker build -q --build-arg BASE="$base" -t "$tag" "$work" >/dev/null
echo "agent-image.sh: built $tag (claude-agent-sdk $version, FROM $base)"
