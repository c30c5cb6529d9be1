#!/usr/bin/env bash
# Quick start, command 2: install Symphony with its test tools into ./.venv and
# run the whole test suite. Extra arguments go to pytest. pytest's exit code is
# passed through, so "no tests collected" (5) fails like any failure.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
exec .venv/bin/python -m pytest "$@"
