#!/usr/bin/env bash
# Makes sure headless Chromium (Debian's `chromium` package) is installed: the
# regulator dashboard's browser test drives it. Prints the binary's path.
# Exit 0 when it is there (or was installed), 1 when it cannot be installed
# (no apt-get, or no root and no password-less sudo), with the reason on stderr.
set -euo pipefail
for name in chromium chromium-browser; do
    if path="$(command -v "$name")"; then
        echo "$path"
        exit 0
    fi
done
if ! command -v apt-get >/dev/null; then
    echo "ensure_chromium: chromium is missing and apt-get is not available to install it" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "ensure_chromium: chromium is missing; installing it needs root (apt-get install chromium)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >&2
"${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium >&2
command -v chromium
