#!/usr/bin/env bash
# Installs the host tools tests/ops needs and cannot get from the Python
# package registry: systemd-analyze (Debian package `systemd`). It does nothing
# when the tool is already there; it installs only when running as root with
# apt-get, and otherwise says what to run. The Python tools (kubernetes-validate,
# PyYAML) come with the `test` extra (scripts/_venv.sh).
set -euo pipefail
if command -v systemd-analyze >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "systemd-analyze is missing; install it as root: apt-get install -y systemd" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "systemd-analyze is missing and apt-get is not available; install systemd by hand" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends systemd >/dev/null
command -v systemd-analyze >/dev/null
