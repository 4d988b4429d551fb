#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, idempotently:
# Debian's busybox-static (for the offline base image), mmdebstrap (for the runpod test image),
# git, shellcheck and systemd's tools, Debian's chromium (the run page's browser test), a Python venv in .venv with testkit/requirements.txt
# (moto, the Prometheus parser, python-hcl2, checkov, pytest), the runpod test image
# and the older-SDK image (scripts/runpod-image.sh, once per machine), the systemd box image
# (scripts/systemd-image.sh), and checks that Docker, the Rust tools, terraform and its provider
# mirror answer. Fails loudly.
# `test-deps.sh demo` installs only what `make demo` needs (busybox-static, mmdebstrap, pip,
# git, Docker).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-test}"

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "test-deps: not root and no sudo: run as root: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
}

missing=()
command -v git >/dev/null 2>&1 || missing+=(git)
{ command -v busybox >/dev/null 2>&1 || [ -x /bin/busybox ]; } || missing+=(busybox-static)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if [ "$mode" != demo ]; then
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
  command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
  # The run page's test loads it in a real, headless browser.
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "test-deps: installing ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ "$mode" = demo ]; then
  if ! docker info >/dev/null 2>&1; then
    echo "test-deps: the Docker engine is not reachable (docker info failed); make demo needs it" >&2
    exit 1
  fi
  exit 0
fi

want=$(sed -n 's/^moto\[server\]==//p' testkit/requirements.txt)
if ! .venv/bin/python -c "import moto, prometheus_client, hcl2, pytest, sys; sys.exit(moto.__version__ != '$want')" >/dev/null 2>&1 \
  || [ ! -x .venv/bin/checkov ]; then
  echo "test-deps: creating .venv with testkit/requirements.txt (moto[server]==$want)"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r testkit/requirements.txt
fi

if ! docker info >/dev/null 2>&1; then
  echo "test-deps: the Docker engine is not reachable (docker info failed); the end-to-end tests need it" >&2
  exit 1
fi
for tool in "cargo fmt" "cargo clippy"; do
  if ! $tool --version >/dev/null 2>&1; then
    echo "test-deps: \`$tool\` is missing: install it with rustup component add ${tool#cargo }" >&2
    exit 1
  fi
done
bash scripts/runpod-image.sh
# The older SDK the tests also run (testkit's OLD_RUNPOD_SDK): its server mode differs.
bash scripts/runpod-image.sh 1.3.3
# The box the deployment tests boot as an instance (systemd as PID 1).
bash scripts/systemd-image.sh >/dev/null
# The Terraform apply tests need terraform and a local mirror of the AWS provider.
if ! command -v terraform >/dev/null 2>&1; then
  echo "test-deps: terraform is missing (1.11 or later): the Terraform apply tests need it" >&2
  exit 1
fi
if [ -z "${JANITOR_TF_MIRROR:-}" ] && [ ! -d /opt/tf-plugins/registry.terraform.io ] && [ ! -d /usr/share/terraform/plugins/registry.terraform.io ]; then
  echo "test-deps: no local mirror of Terraform's AWS provider (/opt/tf-plugins, or set JANITOR_TF_MIRROR)" >&2
  exit 1
fi
echo "test-deps: ready (docker $(docker version --format '{{.Server.Version}}'), moto $want, $(git --version))"
