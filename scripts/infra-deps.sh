#!/usr/bin/env bash
# Installs infra/'s own dependencies (the AWS CDK, which the server's install
# leaves out) from infra/package-lock.json, unless the last install was of
# this same lockfile. `npm test` runs it so that test/infra.test.ts can run the
# CDK assertion tests; `.ci/run` too. Outside CI a failed install (no
# registry) only warns, and those tests are skipped with the reason.
set -euo pipefail
cd "$(dirname "$0")/../infra"

# The lockfile's hash, recorded after each install that succeeded.
stamp=node_modules/.s3ftp-lockfile-sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "infra-deps: npm ci in infra/ (the CDK, for the infra tests)" >&2
if npm ci --no-audit --no-fund --prefer-offline >&2; then
  echo "$want" > "$stamp"
else
  if [[ -n ${CI:-} ]]; then
    exit 1
  fi
  echo "infra-deps: npm ci in infra/ failed; the infra tests will be skipped" >&2
fi
