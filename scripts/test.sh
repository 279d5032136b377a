#!/usr/bin/env bash
# The whole test suite: what `make test` and CI run.
#
#   1. unit tests, normal build (build/)
#   2. unit tests, ASan+UBSan build (build-asan/)
#   3. lint: cppcheck and clang-tidy over src/
#   4. fuzz smoke: each libFuzzer target for a bounded number of runs
#   5. black-box tests: the real daemon (ASan+UBSan build) in temp dirs,
#      real QEMU guests under whatever accelerator the host can run; the
#      real Debian 12 guests (tests/guest/build-debian.sh, built in the
#      background from the start, cached by its hash in tests/guest/out) as
#      their own group beside them
#   6. cluster tests: several hosts, each a network namespace with its own
#      kvmhostd and etcd member (tests/cluster)
#   7. browser tests: the web console (web/) in headless Chromium against
#      the real daemon (ASan+UBSan) and the test guest; web/tests/sso.mjs:
#      the login page's single sign-on against the test OIDC provider
#
# Ends with one line "kvmhost: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${BUILD:-build}
ASAN=${ASAN:-build-asan}
FUZZ=${FUZZ:-build-fuzz}
LOGS=${KH_TEST_LOGS:-$ROOT/test-logs}
mkdir -p "$LOGS"

passed=0
failed=0
failures=()

stage() { printf '\n=== %s\n' "$*"; }
ok() { passed=$((passed + ${2:-1})); printf -- '--- ok: %s\n' "$1"; }
bad() { failed=$((failed + ${2:-1})); failures+=("$1"); printf -- '--- FAILED: %s\n' "$1"; }

stage "dependencies"
scripts/install-deps.sh --test || { echo "cannot install dependencies"; exit 1; }

# The Debian 12 guest disk (several minutes the first time: mmdebstrap from
# Debian's mirror; then cached under tests/guest/out by the script's hash)
# builds in the background while the builds, unit tests, lint and fuzz run.
rm -f "$LOGS/debian-build.rc"
(tests/guest/build-debian.sh >"$LOGS/debian-build.log" 2>&1; echo $? >"$LOGS/debian-build.rc") &

# meson test of one suite (unit by default): count its Ok/Fail lines.
meson_tests() {
  local dir=$1 name=$2 suite=${3:-unit} out
  out=$(meson test -C "$dir" --suite "$suite" --print-errorlogs --num-processes 2 2>&1)
  local rc=$?
  echo "$out" | tail -n 25
  local okn failn
  okn=$(echo "$out" | sed -n 's/^Ok:[[:space:]]*\([0-9]*\).*/\1/p' | tail -1)
  failn=$(echo "$out" | sed -n 's/^Fail:[[:space:]]*\([0-9]*\).*/\1/p' | tail -1)
  okn=${okn:-0}; failn=${failn:-0}
  [ "$rc" -ne 0 ] && [ "$failn" -eq 0 ] && failn=1
  [ "$okn" -gt 0 ] && ok "$name ($okn suites)" "$okn"
  [ "$failn" -gt 0 ] && bad "$name ($failn suites)" "$failn"
}

stage "build and unit tests"
if { [ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" >"$LOGS/setup.log" 2>&1; } &&
   ninja -C "$BUILD" >"$LOGS/build.log" 2>&1; then
  meson_tests "$BUILD" "unit tests"
  # every golden QEMU command line run by the real QEMU (tests/unit/argv)
  meson_tests "$BUILD" "golden argv under QEMU" qemu
else
  tail -n 40 "$LOGS/build.log" "$LOGS/setup.log" 2>/dev/null
  bad "build"
fi

stage "ASan+UBSan build and unit tests"
if { [ -f "$ASAN/build.ninja" ] ||
     meson setup "$ASAN" -Db_sanitize=address,undefined -Db_lundef=false \
       -Dbuildtype=debug >"$LOGS/setup-asan.log" 2>&1; } &&
   ninja -C "$ASAN" >"$LOGS/build-asan.log" 2>&1; then
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 meson_tests "$ASAN" "unit tests (ASan+UBSan)"
else
  tail -n 40 "$LOGS/build-asan.log" 2>/dev/null
  bad "ASan build"
fi

stage "lint"
if scripts/lint.sh "$BUILD" >"$LOGS/lint.log" 2>&1; then ok "lint (cppcheck, clang-tidy)"
else tail -n 60 "$LOGS/lint.log"; bad "lint"; fi

stage "fuzz smoke"
if scripts/fuzz.sh smoke >"$LOGS/fuzz.log" 2>&1; then ok "fuzz smoke"
else tail -n 40 "$LOGS/fuzz.log"; bad "fuzz smoke"; fi

stage "test guest"
if tests/guest/build.sh >"$LOGS/guest.log" 2>&1; then ok "test guest"
else tail -n 40 "$LOGS/guest.log"; bad "test guest"; fi

stage "black-box tests (real daemon, real QEMU)"
# A sanitizer report in a daemon's log or the CLI's stderr, or a daemon that
# does not exit 0 after SIGTERM, fails the test (tests/blackbox/khlib.py);
# KH_TEST_LEAKS=0 turns LeakSanitizer off.
export KH_BUILD_DIR=$ROOT/$ASAN
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# Two workers (pytest-xdist), one test file per worker at a time: every test
# has its own daemon, temp dirs and VM uuids (cgroups vm-<uuid>), and the
# network tests run in a namespace of their own. KH_TEST_WORKERS=1: serial.
workers=${KH_TEST_WORKERS:-2}
par=()
if [ "$workers" -gt 1 ] && /usr/bin/python3 -c 'import xdist' 2>/dev/null; then
  par=(-n "$workers" --dist loadfile)
fi
# pytest: count its closing line (passed, failed, errors).
pytest_stage() {
  local name=$1 out; shift
  out=$(/usr/bin/python3 -m pytest -q -p no:cacheprovider "$@" 2>&1)
  # the whole output (daemon logs of failures) beside the tail printed here
  printf '%s\n' "$out" > "$LOGS/pytest-${name// /-}.log"
  pytest_count "$name" "$out"
}
pytest_count() { # name output
  local name=$1 out=$2
  echo "$out" | tail -n 60
  local summary pp pf pe
  summary=$(echo "$out" | grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed)' | tail -1)
  pp=$(echo "$summary" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+'); pp=${pp:-0}
  pf=$(echo "$summary" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+'); pf=${pf:-0}
  pe=$(echo "$summary" | grep -oE '[0-9]+ error' | grep -oE '[0-9]+'); pe=${pe:-0}
  [ "$pp" -gt 0 ] && ok "$name ($pp tests)" "$pp"
  [ $((pf + pe)) -gt 0 ] && bad "$name ($pf failed, $pe errors)" $((pf + pe))
  [ "$pp" -eq 0 ] && [ $((pf + pe)) -eq 0 ] && bad "$name (no test ran)"
}
# The Debian guests (tests in test_guests.py named test_debian_*): a group
# of their own, serial, in the background beside the other black-box and
# the cluster tests, once their disk is built. A failed build fails them
# (KH_DEBIAN_REQUIRED: no skip) with the build log's tail.
(
  while [ ! -s "$LOGS/debian-build.rc" ]; do sleep 5; done
  if [ "$(cat "$LOGS/debian-build.rc")" = 0 ]; then
    echo "debian guest disk: built or cached ($(tail -n 1 "$LOGS/debian-build.log"))"
  else
    echo "debian guest disk: tests/guest/build-debian.sh FAILED; its log's tail:"
    tail -n 30 "$LOGS/debian-build.log"
  fi
  KH_DEBIAN_REQUIRED=1 KH_DEBIAN_LOG="$LOGS/debian-build.log" timeout 3000 \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/blackbox/test_guests.py \
    -k test_debian_ 2>&1
) >"$LOGS/debian-tests.log" 2>&1 &
debian_tests=$!
pytest_stage black-box "${par[@]}" tests/blackbox -k "not test_debian_"

stage "cluster tests (hosts in network namespaces, a real etcd member each)"
# tests/cluster/hosts.py: one namespace per host on a test bridge, kvmhostd
# (ASan+UBSan) and etcd in each; serial, since the hosts share one bridge.
pytest_stage cluster tests/cluster

stage "Debian guests (real Debian 12 disk: cloud-init, SSH, UEFI + Secure Boot, TPM)"
wait "$debian_tests"
[ "$(cat "$LOGS/debian-build.rc" 2>/dev/null)" = 0 ] ||
  bad "Debian guest disk build (tests/guest/build-debian.sh; log $LOGS/debian-build.log)"
pytest_count "Debian guests" "$(cat "$LOGS/debian-tests.log")"

stage "browser tests (web console in Chromium, real daemon and guest)"
if [ ! -x /usr/bin/chromium ]; then
  echo "browser tests: NOT RUN - chromium is not installed and could not be installed" \
       "(apt-get install chromium); counted as failed"
  bad "browser tests (no chromium)"
elif ! scripts/build-web.sh --force >"$LOGS/web-build.log" 2>&1; then
  tail -n 40 "$LOGS/web-build.log"
  bad "web console build (npm ci, esbuild)"
else
  tail -n 1 "$LOGS/web-build.log"
  out=$(KH_DAEMON="$ROOT/$ASAN/src/daemon/kvmhostd" KH_TEST_LOGS="$LOGS" \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        timeout 600 node web/tests/browser.mjs 2>&1)
  echo "$out" | tail -n 40
  summary=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -1)
  wp=$(echo "$summary" | grep -oE '^[0-9]+'); wp=${wp:-0}
  wf=$(echo "$summary" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+'); wf=${wf:-1}
  [ "$wp" -gt 0 ] && ok "browser ($wp checks; screenshots in $LOGS/web-*.png)" "$wp"
  [ "$wf" -gt 0 ] && bad "browser ($wf failed)" "$wf"
  # single sign-on on the login page (the test-only OIDC provider; no guest)
  out=$(KH_DAEMON="$ROOT/$ASAN/src/daemon/kvmhostd" KH_TEST_LOGS="$LOGS" \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        timeout 300 node web/tests/sso.mjs 2>&1)
  echo "$out" | tail -n 20
  summary=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -1)
  wp=$(echo "$summary" | grep -oE '^[0-9]+'); wp=${wp:-0}
  wf=$(echo "$summary" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+'); wf=${wf:-1}
  [ "$wp" -gt 0 ] && ok "browser SSO ($wp checks; screenshots in $LOGS/sso-*.png)" "$wp"
  [ "$wf" -gt 0 ] && bad "browser SSO ($wf failed)" "$wf"
fi

echo
if [ ${#failures[@]} -gt 0 ]; then
  printf 'failed stages:\n'; printf '  %s\n' "${failures[@]}"
fi
echo "kvmhost: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
