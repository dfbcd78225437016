#!/usr/bin/env bash
# Runs every test of crates/uffd-core (unit tests and tests/*.rs) under valgrind's memcheck, one
# test per valgrind process, and prints what memcheck found: errors, definite/indirect/possible
# leaks, fds left open, unhandled syscalls or ioctls. Installs nothing.
#
#   scripts/memcheck.sh [TEST_NAME_FILTER]
#   MEMCHECK_TIMEOUT=120 (seconds per test)  MEMCHECK_PROFILE=debug|release  MEMCHECK_LOGS=dir
#
# A test in which a thread touches registered memory from user mode cannot run under valgrind:
# valgrind runs one guest thread at a time under its big lock, and a thread asleep in the kernel's
# handle_userfault() still holds it, so the fault-loop thread that would resolve the fault never
# runs. Such a test is detected (a thread of the valgrind process in handle_userfault for 10 s), killed,
# and reported as "deadlock (user-mode fault)", not as a failure of our code. A fault taken in kernel
# mode, inside a syscall such as write(2) from the page, is fine: valgrind drops its lock around
# blocking syscalls.
#
# Exit status: 0 when no test that ran had a memcheck error (leaks of kind definite or possible
# count as errors, less the suppressions of scripts/valgrind.supp) and none failed; 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null; then
  echo "memcheck: valgrind is not installed (Debian/Ubuntu: apt-get install -y valgrind)" >&2
  exit 2
fi

filter="${1:-}"
timeout_s="${MEMCHECK_TIMEOUT:-120}"
profile="${MEMCHECK_PROFILE:-debug}"
logs="${MEMCHECK_LOGS:-target/memcheck}"
mkdir -p "$logs"

cargo_args=(test -p uffd-core --no-run --message-format=json)
[ "$profile" = release ] && cargo_args+=(--release)
# The test executables, from cargo's JSON messages.
mapfile -t binaries < <(cargo "${cargo_args[@]}" 2>/dev/null | node -e '
  let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
    for (const line of s.split("\n")) {
      try { const m = JSON.parse(line); if (m.reason === "compiler-artifact" && m.executable && m.profile.test) console.log(m.executable) } catch {}
    }
  })')
if [ "${#binaries[@]}" -eq 0 ]; then
  echo "memcheck: cargo built no test executable" >&2
  exit 1
fi

vg_args=(--tool=memcheck --leak-check=full --error-exitcode=1 --track-fds=yes
  --suppressions=scripts/valgrind.supp --num-callers=40)

# Whether some thread of process $1 sleeps in handle_userfault().
in_userfault() {
  grep -qsx handle_userfault /proc/"$1"/task/*/wchan
}

printf '%-78s %-26s %s\n' TEST RESULT 'DETAILS (errors; definite/indirect/possible bytes lost; fds open at exit beyond std+inherited; unhandled)'
failed=0 ran=0 clean=0 deadlocked=0
for bin in "${binaries[@]}"; do
  name="$(basename "$bin" | sed 's/-[0-9a-f]*$//')"
  mapfile -t tests < <("$bin" --list --format terse 2>/dev/null | sed -n 's/: test$//p')
  for t in "${tests[@]}"; do
    [ -n "$filter" ] && [[ "$t" != *"$filter"* ]] && continue
    log="$logs/$name.$t.log"
    valgrind "${vg_args[@]}" "$bin" --exact "$t" --test-threads=1 --nocapture >"$log" 2>&1 &
    pid=$!
    waited=0 stuck=0 result=""
    while kill -0 "$pid" 2>/dev/null; do
      sleep 1
      waited=$((waited + 1))
      if in_userfault "$pid"; then stuck=$((stuck + 1)); else stuck=0; fi
      if [ "$stuck" -ge 10 ]; then result="deadlock (user-mode fault)"; break; fi
      if [ "$waited" -ge "$timeout_s" ]; then result="timeout (${timeout_s} s)"; break; fi
    done
    if [ -n "$result" ]; then
      # Only SIGKILL ends it: the thread asleep in the fault holds valgrind's lock, so no signal
      # handler can run.
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      [ "$result" = "timeout (${timeout_s} s)" ] && failed=$((failed + 1)) || deadlocked=$((deadlocked + 1))
      printf '%-78s %-26s %s\n' "$name::$t" "$result" "log: $log"
      continue
    fi
    set +e
    wait "$pid"
    rc=$?
    set -e
    ran=$((ran + 1))
    errors="$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$log" | tail -1)"
    lost() { sed -n "s/.*$1 lost: \([0-9,]*\) bytes.*/\1/p" "$log" | tail -1; }
    fds_total="$(sed -n 's/.*FILE DESCRIPTORS: \([0-9]*\) open.*/\1/p' "$log" | tail -1)"
    inherited="$(grep -c '<inherited from parent>' "$log" || true)"
    std_fds="$(sed -n 's/.*FILE DESCRIPTORS: [0-9]* open (\([0-9]*\) std).*/\1/p' "$log" | tail -1)"
    extra_fds=$(( ${fds_total:-0} - ${std_fds:-3} - inherited ))
    unhandled="$(grep -o 'unhandled [a-z]* [0-9a-fx]*\|unhandled syscall: [0-9]*' "$log" | sort -u | tr '\n' ' ' || true)"
    definite="$(lost definitely)" indirect="$(lost indirectly)" possible="$(lost possibly)"
    details="${errors:-?} errors; lost ${definite:-0}/${indirect:-0}/${possible:-0}; fds +${extra_fds}; ${unhandled:-none}"
    if grep -q 'test result: ok' "$log" && [ "$rc" -eq 0 ] && [ "$extra_fds" -le 0 ]; then
      result="clean"
      clean=$((clean + 1))
    elif ! grep -q 'test result: ok' "$log"; then
      result="test failed (rc $rc)"
      failed=$((failed + 1))
    else
      result="memcheck errors (rc $rc)"
      failed=$((failed + 1))
    fi
    printf '%-78s %-26s %s\n' "$name::$t" "$result" "$details"
  done
done
# MEMCHECK_EXTRA="program args": one more program under memcheck as a whole, e.g. a harness that
# takes its faults in kernel mode (write(2) from the registered page to a pipe), so that the fault
# paths the deadlocked tests cover do run under valgrind.
if [ -n "${MEMCHECK_EXTRA:-}" ]; then
  log="$logs/extra.log"
  # shellcheck disable=SC2086
  if timeout -k 5 "$timeout_s" valgrind "${vg_args[@]}" $MEMCHECK_EXTRA >"$log" 2>&1; then
    printf '%-78s %-26s %s\n' "extra: $MEMCHECK_EXTRA" clean "log: $log"
  else
    printf '%-78s %-26s %s\n' "extra: $MEMCHECK_EXTRA" "failed or errors" "log: $log"
    failed=$((failed + 1))
  fi
fi
echo
echo "memcheck: $ran ran, $clean clean, $deadlocked could not run under valgrind (user-mode faults), $failed failed; logs in $logs"
[ "$failed" -eq 0 ]
