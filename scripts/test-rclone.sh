#!/usr/bin/env bash
# `npm run test:rclone`: rclone's own FTP integration suite (the fstests that
# rclone's CI runs against proftpd, pure-ftpd, vsftpd and `rclone serve ftp`)
# against s3ftp, on both drivers: a local directory, and S3 on a MinIO started
# here with a fresh bucket. rclone's FTP backend runs with its default options
# (host, port, user and obscured password only).
#
# The suite comes from the rclone module at the version scripts/build-rclone.sh
# pins, from the Go module proxy; its test binaries are compiled once into
# $S3FTP_CACHE (default ~/.cache/s3ftp), as build-rclone.sh caches rclone.
# Everything listens on 127.0.0.1. Exits non-zero when any test fails.
#
# Settings (environment):
#   RCLONE_TEST_DRIVERS   drivers to test, default "local s3"
#   RCLONE_TEST_PACKAGES  rclone packages to run with -remote, default
#                         "backend/ftp fs/operations fs/sync vfs": the
#                         backend's fstests, then the copy, sync and move
#                         engine and the VFS layer (`rclone mount`, `serve`),
#                         as rclone's test_all runs them on its FTP remotes.
#                         test_all also runs cmd/bisync, left out here: its
#                         tests make new Fs objects faster than their idle
#                         pooled connections expire (60 s), so it holds
#                         hundreds of connections from 127.0.0.1 at once and
#                         meets s3ftp's connection caps (421 past 50 from one
#                         address, FTP_MAX_CONNECTIONS_PER_IP, and still past
#                         500 in all, FTP_MAX_CONNECTIONS, when that is raised)
#   RCLONE_TEST_TIMEOUT   bound in minutes on each package run, default 20
#   RCLONE_TEST_RUN       a `go test -run` pattern, to run part of the suite
#   RCLONE_TEST_LOG_DIR   keep the server and test logs there
#   LOG_LEVEL             the server's log level, default info (a line per
#                         FTP command with its reply code)
set -euo pipefail
cd "$(dirname "$0")/.."

# Must be the version scripts/build-rclone.sh builds.
RCLONE_MODULE=github.com/rclone/rclone
RCLONE_VERSION=v1.76.0

drivers="${RCLONE_TEST_DRIVERS:-local s3}"
packages="${RCLONE_TEST_PACKAGES:-backend/ftp fs/operations fs/sync vfs}"
minutes="${RCLONE_TEST_TIMEOUT:-20}"
[[ "$minutes" =~ ^[1-9][0-9]*$ ]] || { echo "test-rclone: RCLONE_TEST_TIMEOUT must be a number of minutes" >&2; exit 1; }
cache="${S3FTP_CACHE:-$HOME/.cache/s3ftp}/rclone-tests-${RCLONE_VERSION}"

# Tests skipped on purpose (a `go test -skip` pattern), each with its reason:
# - FsEncoding/invalid_UTF-8 makes a directory whose name ends in the raw byte
#   0xfe. s3ftp refuses names that are not valid UTF-8 with 553 (README,
#   FTP_LEGACY_ENCODING): S3 keys are UTF-8, and two names must never become one
#   key. rclone's suite has an option for such servers (SkipInvalidUTF8), but
#   its FTP test does not set it, since the FTP servers it tests store raw bytes.
skip='^TestIntegration$/^FsMkdir$/^FsEncoding$/^invalid_UTF-8$'

work="$(mktemp -d "${TMPDIR:-/tmp}/s3ftp-rclone.XXXXXX")"
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n "${RCLONE_TEST_LOG_DIR:-}" ]]; then
    mkdir -p "$RCLONE_TEST_LOG_DIR"
    cp "$work"/*.log "$RCLONE_TEST_LOG_DIR"/ 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say() { echo "test-rclone: $*" >&2; }

# A port that was free a moment ago (for MinIO, which cannot report the one it got).
free_port() {
  node -e 'const s = require("node:net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
}

# Waits until FILE has a line matching PATTERN, or the process PID dies, or 60 s pass.
wait_for_line() {
  local file="$1" pattern="$2" pid="$3"
  for _ in $(seq 600); do
    grep -q -- "$pattern" "$file" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { say "process $pid exited early:"; tail -20 "$file" >&2; return 1; }
    sleep 0.1
  done
  say "timed out waiting for '$pattern' in $file"
  tail -20 "$file" >&2
  return 1
}

if (( $(node -p 'process.versions.node.split(".")[0]') < 22 )); then
  say "node $(node --version) is older than 22, which the server needs"
  exit 1
fi

# --- Tools: rclone (for `rclone obscure` and the MinIO bucket), MinIO, the server.
rclone="$(bash scripts/build-rclone.sh | tail -n 1)"
if [[ " $drivers " == *" s3 "* ]]; then minio="$(bash scripts/build-minio.sh | tail -n 1)"; fi
say "building the server"
npx tsc -b tsconfig.build.json

# --- rclone's test binaries, compiled once per package from the module source.
# The module cache is read-only, but `go test -c` writes only its output file,
# and rclone's go.sum pins every test dependency.
src="$(cd "$work" && go mod download -json "${RCLONE_MODULE}@${RCLONE_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -d "$src" ]] || { say "no source directory for ${RCLONE_MODULE}@${RCLONE_VERSION}"; exit 1; }
mkdir -p "$cache"
test_binary() {
  local pkg="$1" bin="$cache/${1//\//_}.test"
  if [[ ! -x "$bin" ]]; then
    say "compiling rclone's ./$pkg tests (a few minutes the first time)"
    local tmp
    tmp="$(mktemp "$cache/build.XXXXXX")"
    if ! (cd "$src" && go test -c -o "$tmp" "./$pkg") >&2; then rm -f "$tmp"; return 1; fi
    mv -f "$tmp" "$bin"
  fi
  echo "$bin"
}
declare -A binaries
for pkg in $packages; do binaries[$pkg]="$(test_binary "$pkg")"; done

# --- MinIO on loopback with a fresh bucket, for the S3 driver.
start_minio() {
  # The free port may be taken before MinIO binds it; try again then.
  for _ in 1 2 3; do
    launch_minio && return 0
    kill -TERM "${pids[-1]}" 2>/dev/null || true
    rm -rf "$work/minio"
  done
  return 1
}

launch_minio() {
  local port console
  port="$(free_port)"
  console="$(free_port)"
  minio_endpoint="http://127.0.0.1:${port}"
  minio_user="rclonetest$RANDOM"
  minio_secret="$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  mkdir -p "$work/minio"
  MINIO_ROOT_USER="$minio_user" MINIO_ROOT_PASSWORD="$minio_secret" MINIO_BROWSER=off MINIO_UPDATE=off \
    "$minio" server "$work/minio" --quiet --address "127.0.0.1:${port}" --console-address "127.0.0.1:${console}" \
    >"$work/minio.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 600); do
    curl -fsS -o /dev/null "${minio_endpoint}/minio/health/live" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { say "MinIO exited:"; tail -20 "$work/minio.log" >&2; return 1; }
    sleep 0.1
  done
  bucket="s3ftp-rclone-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  RCLONE_CONFIG=/dev/null RCLONE_S3_PROVIDER=Minio RCLONE_S3_ENDPOINT="$minio_endpoint" \
    RCLONE_S3_ACCESS_KEY_ID="$minio_user" RCLONE_S3_SECRET_ACCESS_KEY="$minio_secret" \
    "$rclone" mkdir ":s3:${bucket}"
}

# --- s3ftp on a port it picks, for one driver; sets server_pid and server_port.
start_server() {
  local driver="$1" log="$work/server-$1.log"
  local -a storage
  if [[ "$driver" == s3 ]]; then
    storage=(S3_BUCKET="$bucket" S3_ENDPOINT="$minio_endpoint" S3_REGION=us-east-1
      AWS_ACCESS_KEY_ID="$minio_user" AWS_SECRET_ACCESS_KEY="$minio_secret")
  else
    mkdir -p "$work/data-$driver"
    storage=(DATA_DIR="$work/data-$driver")
  fi
  env -i PATH="$PATH" HOME="$HOME" FTP_HOST=127.0.0.1 FTP_PORT=0 FTP_USER=rclone FTP_PASSWORD="$ftp_password" \
    LOG_LEVEL="${LOG_LEVEL:-info}" "${storage[@]}" node dist/src/main.js >"$log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  wait_for_line "$log" '"event":"listening"' "$server_pid"
  server_port="$(grep -m1 '"event":"listening"' "$log" | sed -n 's/.*"port":\([0-9]*\).*/\1/p')"
}

# Counts the leaf tests (those with no subtests) of a `go test -v` log: "passed failed skipped".
count_results() {
  awk '
    match($0, /^ *--- (PASS|FAIL|SKIP): [^ ]+/) {
      split(substr($0, RSTART, RLENGTH), f, " ")
      result[f[3]] = f[2]
    }
    END {
      for (name in result) for (other in result) if (index(other, name "/") == 1) { parent[name] = 1; break }
      for (name in result) if (!(name in parent)) n[result[name]]++
      printf "%d %d %d\n", n["PASS:"], n["FAIL:"], n["SKIP:"]
    }' "$1"
}

# What a `go test -v` log says about each failed leaf test (rclone's own log
# lines left out), then any panic or timeout.
failure_report() {
  awk '
    /^=== (RUN|CONT|NAME) / { current = $3; next }
    match($0, /^ *--- (PASS|FAIL|SKIP): [^ ]+/) {
      split(substr($0, RSTART, RLENGTH), f, " ")
      result[f[3]] = f[2]
      next
    }
    /^panic:/ { panicking = 1 }
    /^panic:|^FAIL|^\*\*\* Test killed/ { tail = tail $0 "\n"; current = ""; next }
    panicking && /^\t/ && ++shown <= 20 { tail = tail $0 "\n"; next }
    /^[0-9][0-9][0-9][0-9]\/[0-9][0-9]\/[0-9][0-9] / { next }
    current != "" { said[current] = said[current] $0 "\n" }
    END {
      for (name in result) for (other in result) if (index(other, name "/") == 1) { parent[name] = 1; break }
      for (name in result) if (result[name] == "FAIL:" && !(name in parent)) printf "--- FAIL: %s\n%s", name, said[name]
      printf "%s", tail
    }' "$1"
}

ftp_password="$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
obscured="$("$rclone" obscure "$ftp_password")"
[[ " $drivers " == *" s3 "* ]] && start_minio

failed=0
summaries=()
for driver in $drivers; do
  start_server "$driver"
  remote="TestS3ftp${driver^}"
  config="$work/rclone-$driver.conf"
  printf '[%s]\ntype = ftp\nhost = 127.0.0.1\nport = %s\nuser = rclone\npass = %s\n' \
    "$remote" "$server_port" "$obscured" >"$config"
  driver_start=$SECONDS
  totals=(0 0 0)
  parts=()
  for pkg in $packages; do
    log="$work/go-test-$driver-${pkg//\//_}.log"
    say "$driver: running rclone's ./$pkg tests against 127.0.0.1:$server_port (log: $log)"
    start=$SECONDS
    status=0
    # The test binary runs in its package directory, as `go test` would run it. It runs
    # in the background so that a signal reaches this script's trap at once, and the
    # trap's TERM reaches the binary through timeout.
    # Its local temporary directories go under $work, so the trap removes them even
    # when the run is cut short. Go's own timeout comes first and names the tests
    # still running; timeout(1) is there for a binary that hangs past it.
    mkdir -p "$work/tmp"
    (cd "$src/$pkg" && RCLONE_CONFIG="$config" TMPDIR="$work/tmp" exec timeout --kill-after=30s "$((minutes * 60 + 60))s" \
      "${binaries[$pkg]}" -test.v -test.timeout "${minutes}m" -test.skip "$skip" ${RCLONE_TEST_RUN:+-test.run "$RCLONE_TEST_RUN"} \
      -remote "$remote:" -verbose) >"$log" 2>&1 &
    pids+=("$!")
    wait "$!" || status=$?
    read -r passed failures skipped < <(count_results "$log")
    totals=($((totals[0] + passed)) $((totals[1] + failures)) $((totals[2] + skipped)))
    part="$pkg $passed/$failures/$skipped in $((SECONDS - start)) s"
    if (( status != 0 )); then
      failed=1
      # A crash or a timeout can fail a run with no failed leaf test; count it.
      (( failures == 0 )) && totals[1]=$((totals[1] + 1))
      if grep -q '^panic: test timed out' "$log" || (( status == 124 )); then
        part="$part, timed out after $minutes min"
      else
        part="$part, exit $status"
      fi
      say "$driver: ./$pkg failed (exit $status); failing tests and their messages:"
      failure_report "$log" | head -300 >&2
    fi
    parts+=("$part")
  done
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  summaries+=("rclone on the $driver driver: ${totals[0]} passed, ${totals[1]} failed, ${totals[2]} skipped in $((SECONDS - driver_start)) s (passed/failed/skipped: $(IFS=';'; echo "${parts[*]}" | sed 's/;/; /g'))")
done

printf '%s\n' "${summaries[@]}"
exit "$failed"
