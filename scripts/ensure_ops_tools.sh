#!/usr/bin/env bash
# Installs the host tools tests/ops needs and cannot get from the Python
# package registry: systemd-analyze (Debian package `systemd`) and promtool
# (Debian package `prometheus`, which ships /usr/bin/promtool; it checks and
# unit-tests the alert rules in ops/prometheus/). It does nothing when the
# tools are already there; it installs only when running as root with apt-get,
# and otherwise says what to run. The Python tools (kubernetes-validate,
# PyYAML) come with the `test` extra (scripts/_venv.sh).
set -euo pipefail
missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "missing host tools; install them as root: apt-get install -y ${missing[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing host tools and apt-get is not available; install by hand: ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Only promtool is wanted from the prometheus package, not its server: a
# policy-rc.d that answers 101 ("action forbidden") keeps the maintainer
# scripts from starting the service; it is removed again afterwards.
policy=/usr/sbin/policy-rc.d
added_policy=no
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 0755 "$policy"
    added_policy=yes
fi
trap '[ "$added_policy" = yes ] && rm -f "$policy"' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
command -v systemd-analyze >/dev/null
command -v promtool >/dev/null
