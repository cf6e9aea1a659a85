# shellcheck shell=bash
#
# Helpers for the TPM integration tests (tests/integration/tpm_*.sh), on top
# of common.sh. Source it after common.sh:
#
#   . "$(dirname "$0")/../lib/common.sh"
#   . "$(dirname "$0")/../lib/tpm.sh"
#
# Every test starts its own swtpm (start_swtpm), in a state directory in its
# $WORK, on a pair of free loopback ports found by probing (the server port
# and, one above it, the control port), and stops it by PID when the test
# ends (common.sh's cleanup stops every PID in _SERVER_PIDS). The TCTI is
# always explicit (swtpm:host=127.0.0.1,port=P): a default search could reach
# someone else's simulator. swtpm has no resource manager: what a process
# leaves loaded stays loaded, so tpm_assert_no_transient checks that nothing
# was left behind.
#
# The keystore loads a PKCS#11 module even for TPM keys, so each test also
# gets an empty SoftHSM token directory; TOKEN_CNF (what `mks` and `ossl`
# use) names the module and the TPM's TCTI.

# Nothing from the caller's environment may pick the TPM or a D-Bus bus.
unset TPM2TOOLS_TCTI TPM2OPENSSL_TCTI TCTI_PCAP_FILE DBUS_SESSION_BUS_ADDRESS
# tpm2-tss logs to stderr unless told not to.
export TSS2_LOG=all+none

TPM2_PROVIDER_DIR=$(openssl version -m 2>/dev/null | sed -n 's/^MODULESDIR: "\(.*\)"$/\1/p')

require_swtpm() {
    command -v swtpm >/dev/null 2>&1 || skip "swtpm is not installed (Debian package swtpm)"
    require_cmd python3
}

# require_tpm2_tools: tpm2-tools (lockout reset, transient handle checks).
require_tpm2_tools() {
    command -v tpm2_getcap >/dev/null 2>&1 ||
        skip "tpm2-tools is not installed (Debian package tpm2-tools)"
}

# require_tpm2_openssl: Debian's tpm2-openssl provider (tpm2.so).
require_tpm2_openssl() {
    if [ -z "$TPM2_PROVIDER_DIR" ] || [ ! -r "$TPM2_PROVIDER_DIR/tpm2.so" ]; then
        skip "tpm2-openssl is not installed (Debian package tpm2-openssl; no tpm2.so in ${TPM2_PROVIDER_DIR:-?})"
    fi
}

# Everything a TPM test needs: the build, SoftHSM (see above), the CA
# fixture, swtpm, a work directory and an empty token directory.
setup_tpm_test() {
    require_built
    require_softhsm
    require_fixture
    require_swtpm
    new_workdir
    use_tokendir "$WORK/tokens"
}

# setup_tpm_test_on_swtpm: setup_tpm_test, tpm2-tools required, and one
# swtpm ("a") that the CLI and openssl.cnf use.
setup_tpm_test_on_swtpm() {
    setup_tpm_test
    require_tpm2_tools
    start_swtpm a
    use_tpm "$SWTPM_TCTI"
}

# free_port_pair: a port P with P and P+1 both free on 127.0.0.1 right now.
free_port_pair() {
    python3 - <<'PY'
import socket, sys
for _ in range(200):
    a = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    a.bind(("127.0.0.1", 0))
    p = a.getsockname()[1]
    b = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if p >= 65535:
            continue
        b.bind(("127.0.0.1", p + 1))
        print(p)
        sys.exit(0)
    except OSError:
        pass
    finally:
        a.close()
        b.close()
sys.exit(1)
PY
}

# start_swtpm NAME: starts an swtpm with its state in $WORK/swtpm-NAME and sets
# SWTPM_TCTI (swtpm:host=127.0.0.1,port=P), SWTPM_PORT and SWTPM_PID (for
# tests that use them; cleanup stops it anyway). The
# ports are probed, then bound by swtpm: another process may take them in
# between, so a start that fails is tried again on other ports.
start_swtpm() {
    local name=$1 dir=$WORK/swtpm-$1 port attempt pid
    mkdir -p "$dir"
    for attempt in 1 2 3 4 5; do
        port=$(free_port_pair) || fail "no free pair of loopback ports for swtpm"
        swtpm socket --tpm2 --tpmstate "dir=$dir" \
            --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
            --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
            --flags not-need-init,startup-clear \
            --log "file=$dir/swtpm.log,level=1" </dev/null >"$dir/swtpm.out" 2>&1 &
        pid=$!
        _SERVER_PIDS+=("$pid")
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                SWTPM_TCTI="swtpm:host=127.0.0.1,port=$port"
                # shellcheck disable=SC2034 # for the tests
                SWTPM_PORT=$port SWTPM_PID=$pid
                note "swtpm $name: pid $pid, TCTI $SWTPM_TCTI"
                return 0
            fi
            sleep 0.05
        done
        stop_pid "$pid"
        note "swtpm $name did not start on port $port (attempt $attempt)"
    done
    sed 's/^/    swtpm| /' "$dir/swtpm.out" "$dir/swtpm.log" >&2 2>/dev/null || true
    fail "swtpm $name did not start"
}

# require_tabrmd: Debian's resource manager (tpm2-abrmd, its TCTI
# libtss2-tcti-tabrmd0) and a D-Bus daemon to run it on.
require_tabrmd() {
    command -v tpm2-abrmd >/dev/null 2>&1 ||
        skip "tpm2-abrmd is not installed (Debian package tpm2-abrmd)"
    command -v dbus-daemon >/dev/null 2>&1 ||
        skip "dbus-daemon is not installed (Debian package dbus-daemon)"
    [ -r /usr/share/dbus-1/session.conf ] ||
        skip "no D-Bus session bus configuration (Debian package dbus-session-bus-common)"
    tcti_installed tabrmd || skip "the tabrmd TCTI is not installed (Debian package libtss2-tcti-tabrmd0)"
}

# tcti_installed NAME: 0 when tpm2-tss's TCTI library NAME is installed.
tcti_installed() {
    local d
    for d in /usr/lib/*-linux-gnu /usr/lib64 /usr/lib /usr/local/lib; do
        [ -e "$d/libtss2-tcti-$1.so.0" ] && return 0
    done
    return 1
}

# start_tabrmd TCTI: a resource manager in front of the TPM at TCTI:
# dbus-daemon with a private session bus (its address exported in
# DBUS_SESSION_BUS_ADDRESS, for every program the test starts), then
# tpm2-abrmd on that bus. Sets TABRMD_TCTI (tabrmd:bus_type=session),
# TABRMD_PID and DBUS_PID; cleanup stops both by PID. The system bus and
# any other tabrmd are never touched.
start_tabrmd() {
    local dir=$WORK/tabrmd root=()
    mkdir -p "$dir"
    dbus-daemon --session --fork --print-address=3 --print-pid=4 \
        3>"$dir/bus.address" 4>"$dir/bus.pid" </dev/null >"$dir/dbus.log" 2>&1 ||
        fail "dbus-daemon --session did not start: $(cat "$dir/dbus.log")"
    DBUS_PID=$(head -n1 "$dir/bus.pid")
    _SERVER_PIDS+=("$DBUS_PID")
    DBUS_SESSION_BUS_ADDRESS=$(head -n1 "$dir/bus.address")
    export DBUS_SESSION_BUS_ADDRESS
    [ "$(id -u)" -ne 0 ] || root=(--allow-root)
    tpm2-abrmd --session "${root[@]}" --logger=stdout --tcti="$1" \
        </dev/null >"$dir/tabrmd.log" 2>&1 &
    TABRMD_PID=$!
    _SERVER_PIDS+=("$TABRMD_PID")
    TABRMD_TCTI=tabrmd:bus_type=session
    for _ in $(seq 100); do
        kill -0 "$TABRMD_PID" 2>/dev/null || break
        if tpm2_getcap properties-fixed -T "$TABRMD_TCTI" >/dev/null 2>&1; then
            note "tpm2-abrmd: pid $TABRMD_PID on the session bus $DBUS_SESSION_BUS_ADDRESS (dbus-daemon $DBUS_PID), in front of $1"
            return 0
        fi
        sleep 0.1
    done
    sed 's/^/    tabrmd| /' "$dir/tabrmd.log" >&2
    fail "tpm2-abrmd did not answer on the session bus"
}

# tpm_cnf FILE TCTI [PIN_SOURCE]: an openssl.cnf as write_openssl_cnf writes
# it, with tpm2-tcti = TCTI in the provider's section.
tpm_cnf() {
    local file=$1 tcti=$2
    write_openssl_cnf "$file" "${3:-}"
    sed -i "s|^pkcs11-module = .*|&\ntpm2-tcti = $tcti|" "$file"
    grep -q "^tpm2-tcti = $tcti\$" "$file" || fail "tpm_cnf: no tpm2-tcti line in $file"
}

# use_tpm TCTI: makes TOKEN_CNF (what `mks` and `ossl` use) and
# TOKEN_CNF_NOPIN reach the TPM through TCTI; sets TPM_TCTI.
use_tpm() {
    TPM_TCTI=$1
    tpm_cnf "$TOKEN_CNF" "$TPM_TCTI" "file:$PIN_FILE"
    tpm_cnf "$TOKEN_CNF_NOPIN" "$TPM_TCTI"
}

# tpm_reset_lockout TCTI: clears the dictionary-attack lockout (swtpm locks
# authorisation after 3 failures, for 1000 s) and the failure counter.
tpm_reset_lockout() {
    run_ok "lockout-reset-$RANDOM" tpm2_dictionarylockout --clear-lockout -T "$1"
}

# tpm_lockout_counter TCTI: the TPM's dictionary-attack failure counter.
tpm_lockout_counter() {
    local v
    v=$(tpm2_getcap properties-variable -T "$1" | sed -n "s/^ *TPM2_PT_LOCKOUT_COUNTER: *//p")
    printf "%d" "$v"
}

# tpm_transient_count TCTI: transient objects loaded in the TPM now.
tpm_transient_count() {
    tpm2_getcap handles-transient -T "$1" 2>/dev/null | grep -c '0x80' || true
}

# tpm_session_count TCTI: sessions open in the TPM now (loaded or saved).
tpm_session_count() {
    { tpm2_getcap handles-loaded-session -T "$1" 2>/dev/null
      tpm2_getcap handles-saved-session -T "$1" 2>/dev/null; } | grep -c '0x0[23]' || true
}

# tpm_assert_no_transient TCTI WHAT: no transient object and no session is
# left in the TPM (every process flushed what it loaded or started).
tpm_assert_no_transient() {
    local n s
    n=$(tpm_transient_count "$1")
    s=$(tpm_session_count "$1")
    [ "$n" = 0 ] && [ "$s" = 0 ] || {
        tpm2_getcap handles-transient -T "$1" | sed 's/^/    transient| /' >&2
        tpm2_getcap handles-loaded-session -T "$1" | sed 's/^/    session| /' >&2
        fail "$2: $n transient objects and $s sessions left in the TPM"
    }
}

# tpm2_ossl ARGS...: openssl without our provider and without any provider
# from a config file, on the TPM of TPM_TCTI, for Debian's tpm2-openssl
# (tpm2-openssl reads its TCTI from TPM2OPENSSL_TCTI). Give the providers:
# -provider tpm2 -provider default (in that order: OpenSSL 3.0 fetches from
# the first that has an algorithm, and tpm2-openssl signs only through its own).
tpm2_ossl() {
    OPENSSL_CONF=/dev/null TPM2OPENSSL_TCTI=$TPM_TCTI openssl "$@"
}

# tpm_enroll NAME KEY_TYPE USAGE [extra enroll args...]: `enroll --tpm` of key
# NAME; writes $WORK/NAME.csr and the TPM key file $WORK/NAME.key.pem.
tpm_enroll() {
    local name=$1 type=$2 usage=$3
    shift 3
    run_ok "enroll-$name" mks enroll --tpm --label "$name" \
        --key-type "$type" --usage "$usage" --subject "CN=$name,O=mtls-keystore tests" \
        --san "DNS:$name.test" --san "DNS:localhost" --san "IP:127.0.0.1" "$@" \
        --out "$WORK/$name.csr" --key-ref "$WORK/$name.key.pem"
}

# pubkey_via STEP KEYFILE OUT [openssl-wrapper]: the public key of a key file
# as a provider sees it (default: ours, through `ossl`), PEM.
pubkey_via() {
    local step=$1 key=$2 out=$3 via=${4:-ossl}
    run_ok "$step" "$via" pkey -in "$key" -pubout -out "$out"
    assert_grep "$out" '^-----BEGIN PUBLIC KEY-----$' "$step: no public key"
}

# tpm_pcap_available: 0 when tpm2-tss's pcap TCTI is installed. It wraps
# another TCTI ("pcap:swtpm:host=...") and records every command and
# response in the pcapng file TCTI_PCAP_FILE names.
tpm_pcap_available() {
    tcti_installed pcap
}

# tpm_pcap_commands PCAP: the TPM commands in a pcap TCTI capture, by name in
# order, on one line, after their number ("5 CreatePrimary Load ..."). A
# command the TPM answered with TPM_RC_RETRY (libtpms does, for the first use
# of an algorithm after startup, while it tests it), which tpm2-tss sends
# again by itself, is named NAME:RETRY; count commands with tpm_count_of.
tpm_pcap_commands() {
    python3 - "$1" <<'PY'
import struct, sys
CC = {0x120: "EvictControl", 0x131: "CreatePrimary", 0x153: "Create", 0x157: "Load",
      0x159: "RSA_Decrypt", 0x15d: "Sign", 0x161: "ContextLoad", 0x162: "ContextSave",
      0x165: "FlushContext", 0x173: "ReadPublic", 0x176: "StartAuthSession",
      0x17a: "GetCapability"}
data = open(sys.argv[1], "rb").read()
off, cmds = 0, []
while off + 12 <= len(data):
    btype, blen = struct.unpack_from("<II", data, off)
    if blen < 12:
        break
    if btype == 6:  # enhanced packet block: IPv4, TCP, the TPM command or response
        caplen = struct.unpack_from("<I", data, off + 20)[0]
        pkt = data[off + 28:off + 28 + caplen]
        tcp = pkt[(pkt[0] & 0x0f) * 4:]
        payload = tcp[(tcp[12] >> 4) * 4:]
        # Commands go to the TPM's port 2321; responses come from it.
        if len(payload) >= 10 and payload[:2] in (b"\x80\x01", b"\x80\x02"):
            code = struct.unpack_from(">I", payload, 6)[0]
            if struct.unpack_from(">H", tcp, 2)[0] == 2321:
                cmds.append(CC.get(code, hex(code)))
            elif code == 0x922 and cmds:
                cmds[-1] += ":RETRY"
    off += blen
print(len(cmds), " ".join(cmds))
PY
}

# tpm_count_of NAME COMMANDS: how often NAME is in a tpm_pcap_commands line
# (resent commands not counted).
tpm_count_of() {
    printf '%s\n' "$2" | tr ' ' '\n' | grep -cx "$1" || true
}

# run_pty STEP ANSWER... -- CMD...: runs CMD on a new pseudo-terminal (its
# controlling terminal, so that it prompts), types each ANSWER and Enter when
# CMD shows a prompt (output ending in ": ") and has turned the terminal's
# echo off (it must, within 10 s), and keeps what the terminal showed in
# $WORK/STEP.out. CMD must exit 0, or $PTY_RC when that is set.
run_pty() {
    local step=$1 answers=() rc=0 want=${PTY_RC:-0}
    shift
    while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
        answers+=("$1")
        shift
    done
    [ "${1:-}" = -- ] || fail "run_pty: no -- before the command"
    shift
    python3 - "${#answers[@]}" "${answers[@]}" "$@" >"$WORK/$step.out" 2>"$WORK/$step.err" <<'PY' || rc=$?
import os, pty, select, sys, termios, time
n = int(sys.argv[1])
answers, cmd = sys.argv[2:2 + n], sys.argv[2 + n:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(cmd[0], cmd)
shown, pending, deadline = b"", b"", time.time() + 60
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.2)
    if r:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        shown += data
        pending += data
    if answers and pending.rstrip(b" ").endswith(b":"):
        # The prompt is written before echo goes off: wait for that.
        quiet = time.time() + 10
        while termios.tcgetattr(fd)[3] & termios.ECHO:
            if time.time() > quiet:
                sys.stderr.write("the prompt did not turn echo off\n")
                os.kill(pid, 9)
                sys.exit(3)
            time.sleep(0.01)
        os.write(fd, answers.pop(0).encode() + b"\n")
        pending = b""
_, status = os.waitpid(pid, 0)
sys.stdout.write(shown.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
PY
    if [ "$rc" -ne "$want" ]; then
        _show_output "$step"
        fail "$step: exit $rc, expected $want (on a terminal): $(_quote "$@")"
    fi
}
