# Sourced by scripts/test-python and scripts/test-asan (not run by itself).
#
# install_copy VENV EXTRAS LOG: a regular (non-editable) `pip install -v` of the project,
# with EXTRAS (e.g. "standard,test"), into the venv VENV; the build log (with the
# compiler's messages) goes to LOG.
#
# The package is built from a scratch copy of the working tree: building in place would
# write build/ and the generated src/fastserve/_parser.c, _http2.c into the tree, racing any other
# build (the main .venv's editable install) going on there. pip always rebuilds and
# reinstalls a project given as a directory, so a reused venv gets the current code.
# Compiler flags come from the environment (CFLAGS, LDFLAGS), as setuptools reads them.
install_copy() {
    local venv="$1" extras="$2" log="$3" copy
    copy="$(mktemp -d)"
    tar -c --exclude=./.git --exclude='./.venv*' --exclude=./build --exclude=./dist \
        --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache \
        --exclude=.ruff_cache --exclude=./bench/results --exclude='./src/fastserve/*.so' \
        --exclude='./src/fastserve/_*.c' -f - . | tar -x -C "$copy"
    if ! "$venv/bin/python" -m pip install -v "$copy[$extras]" >"$log" 2>&1; then
        rm -rf "$copy"
        return 1
    fi
    rm -rf "$copy"
}
