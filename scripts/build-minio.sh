#!/usr/bin/env bash
# Builds the MinIO server used by the S3 tests, once, into a cache directory.
# The minio/minio repository is archived; we pin its last commit so every
# machine tests against the same server. Prints the binary path on the last
# stdout line (test/helpers/minio.ts reads it).
set -euo pipefail

MINIO_COMMIT=7aac2a2c5b7c
MINIO_VERSION=v0.0.0-20260212201848-${MINIO_COMMIT}

# The cache directory is named after the short commit.
exec bash "$(dirname "$0")/go-install-cached.sh" minio github.com/minio/minio "$MINIO_VERSION" "$MINIO_COMMIT"
