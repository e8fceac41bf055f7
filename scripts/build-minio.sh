#!/usr/bin/env bash
# Builds the MinIO server used by the S3 tests, once, into a cache directory.
# The minio/minio repository is archived; we pin its last commit so every
# machine tests against the same server. Prints the binary path on the last
# stdout line (test/helpers/minio.ts reads it).
set -euo pipefail

MINIO_COMMIT=7aac2a2c5b7c
MINIO_VERSION=v0.0.0-20260212201848-${MINIO_COMMIT}

cache_dir="${S3FTP_CACHE:-$HOME/.cache/s3ftp}/minio-${MINIO_COMMIT}"
binary="${cache_dir}/minio"

if [[ -x "$binary" ]]; then
  echo "$binary"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "build-minio: 'go' is not on PATH; install Go (https://go.dev/dl/) to build MinIO" >&2
  exit 1
fi

mkdir -p "$cache_dir"
# Build into a private directory and move into place at the end, so an
# interrupted build never leaves a half-written binary at $binary and two
# concurrent builds never write the same file.
tmp_bin="$(mktemp -d "${cache_dir}/build.XXXXXX")"
trap 'rm -rf "$tmp_bin"' EXIT

echo "build-minio: building github.com/minio/minio@${MINIO_VERSION} (takes a few minutes the first time)" >&2
# Go output goes to stderr so the last stdout line stays the binary path.
GOBIN="$tmp_bin" \
  go install "github.com/minio/minio@${MINIO_VERSION}" >&2

mv -f "$tmp_bin/minio" "$binary"
echo "$binary"
