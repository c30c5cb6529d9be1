#!/usr/bin/env bash
# Quick start, command 1: install Symphony into ./.venv and run the whole system
# (embedded PostgreSQL 18 in ./.symphony unless --database-url is given).
# Extra arguments go to `symphony up`.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
exec .venv/bin/symphony up "$@"
