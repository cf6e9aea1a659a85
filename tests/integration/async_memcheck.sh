#!/usr/bin/env bash
# async_memcheck.sh: the abandoned-job cases of tests/unit/test_async.c
# under valgrind memcheck. A connection freed while its ASYNC job waits for
# the token (SSL_free before the job is resumed) must leave nothing of ours
# behind: the operation, its copy of the input and the result, the eventfd,
# the session. Any memory error or definitely lost block fails, but for the
# job itself, which OpenSSL cannot free (tests/lib/valgrind.supp says which
# three blocks). The ASan stage of ci/test runs the same cases under
# LeakSanitizer (test_async suppresses the same three blocks there).
. "$(dirname "$0")/../lib/common.sh"

require_cmd valgrind softhsm2-util
PROG=${MTLSKS_BUILD:?run through ctest}/tests/unit/test_async
[ -x "$PROG" ] || fail "test_async not built: $PROG"
if grep -q '^MTLSKS_SANITIZE:BOOL=ON$' "$MTLSKS_BUILD/CMakeCache.txt" 2>/dev/null; then
    skip "valgrind cannot run a sanitizer build (this build's unit.test_async runs under LeakSanitizer)"
fi
new_workdir

run_rc memcheck 0 valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
    --show-leak-kinds=definite --num-callers=40 "--suppressions=$MTLSKS_SRC/tests/lib/valgrind.supp" \
    "--log-file=$WORK/valgrind.log" "$PROG" '*abandoned*'
assert_grep "$WORK/memcheck.err" 'PASSED.*2 test' "both abandoned-job cases ran and passed"
assert_grep "$WORK/valgrind.log" 'ERROR SUMMARY: 0 errors' "valgrind found errors"
assert_grep "$WORK/valgrind.log" 'definitely lost: 0 bytes' "definitely lost blocks"
note "$(grep -E 'definitely lost|suppressed:' "$WORK/valgrind.log" | sed 's/^==[0-9]*== *//' | tr '\n' ';')"
