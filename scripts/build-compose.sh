#!/usr/bin/env bash
# Builds Docker Compose v2 (the `docker compose` plugin, as a standalone
# binary), once, into a cache directory, so the tests can run
# `docker-compose config` on docker-compose.yml on a machine without the
# plugin or a Docker engine. Prints the binary path on the last stdout line.
set -euo pipefail

COMPOSE_VERSION=v2.40.3

cache_dir="${S3FTP_CACHE:-$HOME/.cache/s3ftp}/compose-${COMPOSE_VERSION}"
binary="${cache_dir}/docker-compose"

if [[ -x "$binary" ]]; then
  echo "$binary"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "build-compose: 'go' is not on PATH; install Go (https://go.dev/dl/) to build Docker Compose" >&2
  exit 1
fi

mkdir -p "$cache_dir"
work="$(mktemp -d "${cache_dir}/build.XXXXXX")"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

echo "build-compose: building github.com/docker/compose/v2@${COMPOSE_VERSION} (takes a few minutes the first time)" >&2
# Its go.mod has replace/exclude directives, which `go install pkg@version`
# refuses: build inside a copy of the module instead.
src="$(go mod download -json "github.com/docker/compose/v2@${COMPOSE_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
cp -r "$src" "$work/src"
chmod -R u+w "$work/src"
(cd "$work/src" && go build -trimpath -o "$work/docker-compose" ./cmd) >&2
mv -f "$work/docker-compose" "$binary"
echo "$binary"
