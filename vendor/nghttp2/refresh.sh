#!/usr/bin/env bash
# Refresh the vendored nghttp2 C sources from the pinned ngh2 sdist on PyPI.
# ngh2 ships the whole nghttp2 release tree under vendor/nghttp2/; we take its
# library (lib/*.c, lib/*.h, lib/includes/nghttp2/*.h) and COPYING, nothing else,
# and generate nghttp2ver.h from its template as the release's build does.
# Usage: vendor/nghttp2/refresh.sh [NGH2_VERSION]
set -euo pipefail
version="${1:-0.3.0}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --no-binary for ngh2 alone: its build requirements (cmake) may come as wheels.
python3 -m pip download --quiet --no-deps --no-binary ngh2 "ngh2==${version}" -d "$work"
tar -xzf "$work/ngh2-${version}.tar.gz" -C "$work"
src="$work/ngh2-${version}/vendor/nghttp2"

release="$(sed -n 's/^project(nghttp2 VERSION \([0-9.]*\) .*/\1/p' "$src/CMakeLists.txt")"
[ -n "$release" ] || { echo "no nghttp2 version in ngh2 ${version}" >&2; exit 1; }
IFS=. read -r major minor patch <<<"$release"

rm -rf "$here/lib"
mkdir -p "$here/lib/includes/nghttp2"
cp "$src"/lib/*.c "$src"/lib/*.h "$here/lib/"
cp "$src"/lib/includes/nghttp2/nghttp2.h "$here/lib/includes/nghttp2/"
sed -e "s/@PACKAGE_VERSION@/${release}/" \
    -e "s/@PACKAGE_VERSION_NUM@/$(printf '0x%02x%02x%02x' "$major" "$minor" "$patch")/" \
    "$src/lib/includes/nghttp2/nghttp2ver.h.in" > "$here/lib/includes/nghttp2/nghttp2ver.h"
cp "$src/COPYING" "$here/"
echo "$release" > "$here/VERSION"
echo "nghttp2 ${release} from ngh2 ${version}"
