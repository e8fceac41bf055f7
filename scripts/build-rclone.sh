#!/usr/bin/env bash
# Builds rclone (killed mid-upload in the tests; a peer in `npm run bench --
# --peers`: `rclone serve ftp` on an S3 remote), once, into a cache directory,
# like build-minio.sh. Pinned to a release tag from the Go module proxy so
# every machine runs the same rclone. Prints the binary path on the last
# stdout line.
set -euo pipefail

exec bash "$(dirname "$0")/go-install-cached.sh" rclone github.com/rclone/rclone v1.76.0
