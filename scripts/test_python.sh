#!/usr/bin/env bash
# The Python package's tests (crates/ditail-py/tests, pytest): builds the package into a
# virtual environment (target/python-venv) with maturin's development build, which reuses
# the workspace's debug build (the same features: `.ci/run` checks it), checks the package's
# annotations and stubs with mypy --strict (what editors check a user's calls against), then
# runs pytest.
# The tests compare against the `ditail` command and the C library of the same build, so the
# workspace's test build comes first (a no-op after `cargo test --workspace`).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --no-run --quiet
venv=target/python-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check "maturin>=1.5,<2" numpy Pillow pytest tqdm mypy
# maturin installs into the environment VIRTUAL_ENV names.
VIRTUAL_ENV="$PWD/$venv" PATH="$PWD/$venv/bin:$PATH" "$venv/bin/maturin" develop --quiet
(cd crates/ditail-py/python && "../../../$venv/bin/mypy" --strict --no-incremental -p ditail)
"$venv/bin/python" -m pytest crates/ditail-py/tests -q "$@"
