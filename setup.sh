#!/usr/bin/env bash
# Sets up hearth on a fresh Debian 12 machine: system packages, npm dependencies, the build,
# then `hearth setup`, which builds the guest kernel and rootfs and boots a first VM.
# Safe to rerun: installed apt packages and cached guest images are skipped, while npm ci
# always reinstalls node_modules.
# Arguments are passed on to `hearth setup`.
set -Eeuo pipefail

readonly SYSTEM_PACKAGES=(
  qemu-system-x86 qemu-utils debootstrap e2fsprogs linux-source-6.1 build-essential flex
  bison bc libelf-dev libssl-dev xz-utils cpio kmod nftables iproute2 ca-certificates
  openssl curl
)
readonly MIN_NODE_MAJOR=20
readonly PHASE_COUNT=6

phase_number=0
phase_name='starting'

start_phase() {
  phase_number=$((phase_number + 1))
  phase_name=$1
  printf '\n==> Phase %d/%d: %s\n' "$phase_number" "$PHASE_COUNT" "$phase_name"
}

report_failure() {
  local status=$?
  # Subshells inherit this trap (set -E); only the main shell reports, and only once.
  if [[ $BASHPID != "$$" ]]; then
    exit "$status"
  fi
  printf '\nsetup.sh: phase %d/%d (%s) failed with exit status %d.\n' \
    "$phase_number" "$PHASE_COUNT" "$phase_name" "$status" >&2
  printf 'Fix the error shown above, then rerun ./setup.sh.\n' >&2
  exit "$status"
}
trap report_failure ERR

fail() {
  printf '\nsetup.sh: phase %d/%d (%s) failed: %s\n' \
    "$phase_number" "$PHASE_COUNT" "$phase_name" "$1" >&2
  exit 1
}

script_path=$(readlink -f "$0")
cd "$(dirname "$script_path")"

start_phase 'Checking privileges'
if [[ $EUID -ne 0 ]]; then
  if ! command -v sudo >/dev/null; then
    fail 'hearth setup needs root (apt-get, debootstrap, TAP devices and nftables), and sudo is not installed. Run ./setup.sh as root.'
  fi
  echo 'Not running as root: rerunning this script with sudo.'
  # sudo resets PATH, which would hide a node installed for this user (nvm, for example).
  exec sudo env "PATH=$PATH" ${HEARTH_HOME:+"HEARTH_HOME=$HEARTH_HOME"} bash "$script_path" "$@"
fi
echo 'Running as root.'
if ! grep -qs '^VERSION_CODENAME=bookworm$' /etc/os-release; then
  echo 'Warning: this host is not Debian 12 (bookworm), the only system setup.sh is tested on.'
fi

start_phase "Checking Node.js ${MIN_NODE_MAJOR} or newer"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  fail "Node.js ${MIN_NODE_MAJOR} or newer, with npm, is required but node or npm is not on PATH. Debian 12's own nodejs package is version 18, which is too old: install Node.js ${MIN_NODE_MAJOR}+ from NodeSource's Debian packages or with nvm, then rerun ./setup.sh."
fi
node_version=$(node --version)
node_major=${node_version#v}
node_major=${node_major%%.*}
if ((node_major < MIN_NODE_MAJOR)); then
  fail "Node.js ${node_version} is too old; hearth needs ${MIN_NODE_MAJOR} or newer. Install a newer Node.js (NodeSource's Debian packages or nvm), then rerun ./setup.sh."
fi
echo "Node.js ${node_version} at $(command -v node)."

start_phase 'Installing system packages'
missing_packages=()
for package in "${SYSTEM_PACKAGES[@]}"; do
  status=$(dpkg-query --show --showformat='${db:Status-Abbrev}' "$package" 2>/dev/null || true)
  if [[ $status != ii* ]]; then
    missing_packages+=("$package")
  fi
done
if ((${#missing_packages[@]} == 0)); then
  echo "All ${#SYSTEM_PACKAGES[@]} packages are already installed."
else
  echo "Installing ${#missing_packages[@]} missing packages: ${missing_packages[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${SYSTEM_PACKAGES[@]}"
fi

start_phase 'Installing npm dependencies'
npm ci

start_phase 'Building hearth'
npm run build

start_phase 'Building guest images and booting a first VM'
node bin/hearth.js setup "$@"

