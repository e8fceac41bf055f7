#!/usr/bin/env bash
# Builds one Go program at a pinned version, once, into a cache directory:
#   go-install-cached.sh NAME MODULE VERSION [LABEL]
# e.g. rclone github.com/rclone/rclone v1.76.0; the binary lands in
# $S3FTP_CACHE (default ~/.cache/s3ftp)/NAME-LABEL/NAME (LABEL: VERSION). Prints the binary
# path on the last stdout line; Go's own output goes to stderr.
set -euo pipefail

name="$1"
module="$2"
version="$3"
label="${4:-$version}"

cache_dir="${S3FTP_CACHE:-$HOME/.cache/s3ftp}/${name}-${label}"
binary="${cache_dir}/${name}"

if [[ -x "$binary" ]]; then
  echo "$binary"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "build-${name}: 'go' is not on PATH; install Go (https://go.dev/dl/) to build ${name}" >&2
  exit 1
fi

mkdir -p "$cache_dir"
# Build into a private directory and move into place at the end, so an
# interrupted build never leaves a half-written binary at $binary and two
# concurrent builds never write the same file.
tmp_bin="$(mktemp -d "${cache_dir}/build.XXXXXX")"
trap 'rm -rf "$tmp_bin"' EXIT

echo "build-${name}: building ${module}@${version} (takes a few minutes the first time)" >&2
GOBIN="$tmp_bin" go install "${module}@${version}" >&2

mv -f "$tmp_bin/${name}" "$binary"
echo "$binary"
