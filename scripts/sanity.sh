#!/usr/bin/env bash
# ansible-test sanity on the collection, with no ignore file.
#
# ansible-test insists on running from .../ansible_collections/<namespace>/<name>, so the collection is copied
# (without the virtualenv, VCS data and caches) into a temporary tree laid out that way. This keeps the clone
# free to live anywhere. Extra arguments are passed to ansible-test (e.g. --test pep8).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python_version="${SANITY_PYTHON:-3.11}"
command -v ansible-test >/dev/null || { echo "ansible-test not found: run 'make venv' (or put .venv/bin on PATH)" >&2; exit 2; }

# ansible-test bootstraps pip in its virtualenvs with a get-pip script downloaded from its own CI file host. That
# host is not reachable from every machine (CI here only reaches PyPI), and ansible-test uses a cached copy when one
# exists. The stand-in below does the same job from the standard library (ensurepip) and PyPI: it installs the
# exact pip version ansible-test asks for plus the packages it passes, in the interpreter that runs it.
py="$(dirname "$(command -v ansible-test)")/python"
at_dir="$("$py" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')"
pip_version="$(grep -ho "pip='[0-9.]*'" "$at_dir/_internal/python_requirements.py" | head -1 | tr -dc '0-9.')"
for version in ${pip_version:-24.2}; do
    cache="$HOME/.ansible/test/cache/get_pip_${version//./_}.py"
    [ -e "$cache" ] && continue
    mkdir -p "$(dirname "$cache")"
    cat > "$cache" <<'PY'
"""Stand-in for get-pip.py written by frontdoor.pki's scripts/sanity.sh: ensurepip, then pip from PyPI."""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet"] + args)
PY
done

work="$(mktemp -d "${TMPDIR:-/tmp}/frontdoor-sanity.XXXXXX")"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

dest="$work/ansible_collections/frontdoor/pki"
mkdir -p "$dest" "$work/build"
# Check exactly what users install: the collection as `ansible-galaxy collection build` packs it (galaxy.yml's
# build_ignore leaves out the gateway, the benchmarks and the pytest suites, which are plain Python checked by
# ruff and pytest), plus ansible-test's own configuration (tests/config.yml).
ansible-galaxy collection build --output-path "$work/build" "$here" >/dev/null
tar -C "$dest" -xzf "$work"/build/frontdoor-pki-*.tar.gz
mkdir -p "$dest/tests"
cp "$here/tests/config.yml" "$dest/tests/config.yml"
# ansible-test writes its virtualenvs and results under tests/output: keep them out of what it checks
printf 'tests/output/\n' > "$dest/.gitignore"

# ansible-test lists a collection's files through git when it is a repository; a fresh one holds exactly the copy.
(
    cd "$dest"
    git init -q
    git add -A
    git -c user.name=sanity -c user.email=sanity@localhost commit -qm sanity --no-gpg-sign
)

cd "$dest"
# --venv: every test gets its own virtualenv with ansible-test's pinned requirements (cached under
# ~/.ansible/test/venv), so the project's .venv is never downgraded or polluted.
ansible-test sanity --venv --requirements --python "$python_version" --color no "$@"
