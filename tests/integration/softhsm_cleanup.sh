#!/usr/bin/env bash
# CTest fixture "softhsm" (FIXTURES_CLEANUP): removes what softhsm_setup.sh made.
set -euo pipefail
[ -n "${MTLSKS_FIXTURE:-}" ] || { echo "FAIL: MTLSKS_FIXTURE is not set" >&2; exit 1; }
case $MTLSKS_FIXTURE in
*/softhsm-fixture) rm -rf -- "$MTLSKS_FIXTURE" ;;
*) echo "FAIL: refusing to remove unexpected path $MTLSKS_FIXTURE" >&2; exit 1 ;;
esac
