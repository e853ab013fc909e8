#!/usr/bin/env bash
# Refresh the vendored llhttp C sources from the pinned httptools sdist on PyPI.
# httptools ships llhttp's generated C (llhttp.h, llhttp.c, api.c, http.c) under
# vendor/llhttp/; we take those four files and the license, nothing else.
# Usage: vendor/llhttp/refresh.sh [HTTPTOOLS_VERSION]
set -euo pipefail
version="${1:-0.9.0}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 -m pip download --quiet --no-deps --no-binary :all: \
    "httptools==${version}" -d "$work"
tar -xzf "$work/httptools-${version}.tar.gz" -C "$work"
src="$work/httptools-${version}/vendor/llhttp"

cp "$src/include/llhttp.h" "$src/src/llhttp.c" "$src/src/api.c" "$src/src/http.c" \
   "$src/LICENSE" "$here/"
sed -n 's/^#define LLHTTP_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)$/\2/p' "$here/llhttp.h" \
    | paste -sd. > "$here/VERSION"
echo "llhttp $(cat "$here/VERSION") from httptools ${version}"
