#!/usr/bin/env bash
# Install and start what mlfn's demo and tests need on a fresh Debian 12 machine:
# Debian packages (Docker engine, mmdebstrap, skopeo, umoci, docker-registry), a
# virtualenv with mlfn and its extras, and a running dockerd. Idempotent: each step
# is skipped when already done. Usage: scripts/setup.sh [EXTRAS]   (default: all,test)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all,test}"
venv="${VENV:-.venv}"

say() { printf '==> %s\n' "$*" >&2; }

need_pkgs=()
# python3-venv: Debian's python3 has no ensurepip without it, so `python3 -m venv` would fail
# binutils: ld and nm link the base image's LAPACK down to what numpy calls (6 MB less)
for p in python3-venv binutils docker.io mmdebstrap skopeo umoci docker-registry; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "apt-get install ${need_pkgs[*]}"
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  if [ -n "$sudo_" ] && sudo docker info >/dev/null 2>&1; then
    # dockerd runs (Debian's docker.io starts it), but this user may not use its socket
    echo "dockerd is running but $(id -un) may not use it: sudo usermod -aG docker $(id -un), then log in again." >&2
    exit 1
  fi
  say "starting dockerd"
  mkdir -p /var/log
  $sudo_ sh -c 'nohup dockerd >/var/log/mlfn-dockerd.log 2>&1 &'
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/mlfn-dockerd.log" >&2; exit 1; }
fi

if [ ! -x "$venv/bin/python" ]; then
  say "creating virtualenv $venv"
  python3 -m venv "$venv"
fi
stamp="$venv/.mlfn-installed-$extras"
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
  say "pip install -e .[$extras] (TensorFlow is about 1.6 GB the first time)"
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
  "$venv/bin/pip" install -q -e ".[$extras]"
  touch "$stamp"
fi
say "ready: $venv/bin/mlfn"
