#!/usr/bin/env bash
# Installs everything pybuild needs on Debian 12: OCI runtimes, uid mapping helpers, the
# tools the tests use as independent validators, a virtualenv with pybuild, and a test
# user for rootless tests. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  crun runc uidmap fuse-overlayfs slirp4netns       # sandbox: runtimes, id maps, fallbacks
  qemu-user-static binfmt-support                   # cross-architecture RUN steps
  skopeo umoci podman docker-registry               # independent validators, test registry
  apache2-utils openssl zstd attr libcap2-bin       # htpasswd, certs, zstd, xattrs, setcap
  git zsh groff                                      # remote contexts (git daemon), completion, man
  openssh-client                                     # --ssh ID=KEYFILE: a private ssh-agent
  busybox-static                                     # the test base image (amd64)
  chromium fonts-dejavu-core                         # renders the build timeline in tests
  mmdebstrap rpm                                     # SBOM tests: a Debian base, an rpm database
  python3 python3-venv python3-dev                   # pybuild itself
)
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The arm64 busybox package is downloaded (not installed) to make the multi-arch base image.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $SUDO dpkg --add-architecture arm64
  missing+=("__update__")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -q
  pkgs=()
  for p in "${missing[@]}"; do [ "$p" = "__update__" ] || pkgs+=("$p"); done
  if [ ${#pkgs[@]} -gt 0 ]; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}"
  fi
fi

# qemu's binfmt entries do not survive a reboot without systemd; re-enable them.
if [ -d /proc/sys/fs/binfmt_misc ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  [ -e /proc/sys/fs/binfmt_misc/register ] || $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
  $SUDO update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
fi

# An unprivileged user for the rootless tests (useradd gives it a subordinate id range).
if [ "$(id -u)" = 0 ] && ! id pbtester >/dev/null 2>&1; then
  useradd -m -s /bin/bash pbtester
fi

# The virtualenv uses Debian's python3 so that unprivileged users (and the build's user
# namespace) can read the interpreter; a python under /root is not readable by them.
PY=/usr/bin/python3
if [ ! -x .venv/bin/python ] || [ "$(readlink -f .venv/bin/python)" != "$(readlink -f $PY)" ]; then
  rm -rf .venv
  $PY -m venv .venv
fi
stamp=.venv/.pybuild-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]' --config-settings editable_mode=compat
  touch "$stamp"
fi
# Bytecode for every module, as an installed CLI has: with PYTHONDONTWRITEBYTECODE set
# (as in some environments) every start would compile what it imports (~45 ms) otherwise.
# Cheap when up to date; the pybuild commands of the Makefile all follow `setup`.
.venv/bin/python -m compileall -q pybuild
echo "setup: ok ($(.venv/bin/pybuild --version))" >&2
