#!/usr/bin/env bash
# Builds rclone (a peer in `npm run bench -- --peers`: `rclone serve ftp` on
# an S3 remote), once, into a cache directory, like build-minio.sh. Pinned to
# a release tag from the Go module proxy so every machine compares against
# the same peer. Prints the binary path on the last stdout line.
set -euo pipefail

RCLONE_VERSION=v1.76.0

cache_dir="${S3FTP_CACHE:-$HOME/.cache/s3ftp}/rclone-${RCLONE_VERSION}"
binary="${cache_dir}/rclone"

if [[ -x "$binary" ]]; then
  echo "$binary"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "build-rclone: 'go' is not on PATH; install Go (https://go.dev/dl/) to build rclone" >&2
  exit 1
fi

mkdir -p "$cache_dir"
# Build into a private directory and move into place at the end, so an
# interrupted build never leaves a half-written binary at $binary and two
# concurrent builds never write the same file.
tmp_bin="$(mktemp -d "${cache_dir}/build.XXXXXX")"
trap 'rm -rf "$tmp_bin"' EXIT

echo "build-rclone: building github.com/rclone/rclone@${RCLONE_VERSION} (takes several minutes the first time)" >&2
# Go output goes to stderr so the last stdout line stays the binary path.
GOBIN="$tmp_bin" \
  go install "github.com/rclone/rclone@${RCLONE_VERSION}" >&2

mv -f "$tmp_bin/rclone" "$binary"
echo "$binary"
