# shellcheck shell=bash
# shellcheck disable=SC2034 # TOKEN_LABEL and the others are for the sourcing test
#
# Helpers for the tests with real clients and servers (clients.sh, nginx.sh).
# Source after tests/lib/common.sh and setup_test.
#
# The server's key and the clients' keys live in two SoftHSM token
# directories, as on two machines:
#   server token "web"     in $WORK/tokens          SOFTHSM2_CONF=$SRV_SOFTHSM2_CONF
#   client token "client"  in $WORK/client-tokens   SOFTHSM2_CONF=$CLI_SOFTHSM2_CONF
# Both take $TEST_PIN; $TOKEN_CNF (our provider, PIN file $PIN_FILE) serves
# both. The server's SoftHSM runs with `library.reset_on_fork = true`, so
# that a forked server process finds the module blank, as with a hardware
# token. Two directories also keep the tests clear of a SoftHSM 2.6.1 race:
# its file store rewrites token.object at every C_Login, and another process
# reading the same token at that moment gets CKR_GENERAL_ERROR or a blank
# token label (pkcs11-tool alone shows it) -- so clients that share a token
# run one at a time.

# split_tokens: makes both token directories; leaves SOFTHSM2_CONF exported
# for the client token and TOKEN_LABEL=client. Use on_server_token /
# on_client_token before `enroll`.
split_tokens() {
    new_token web
    echo "library.reset_on_fork = true" >>"$SOFTHSM2_CONF"
    SRV_SOFTHSM2_CONF=$WORK/softhsm2-server.conf
    mv "$SOFTHSM2_CONF" "$SRV_SOFTHSM2_CONF"
    CLI_SOFTHSM2_CONF=$WORK/softhsm2-client.conf
    mkdir -p "$WORK/client-tokens"
    _write_softhsm_conf "$CLI_SOFTHSM2_CONF" "$WORK/client-tokens"
    on_client_token
    add_token client
}

on_server_token() {
    export SOFTHSM2_CONF=$SRV_SOFTHSM2_CONF
    TOKEN_LABEL=web
}

on_client_token() {
    export SOFTHSM2_CONF=$CLI_SOFTHSM2_CONF
    TOKEN_LABEL=client
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on right now, for
# servers that cannot be told to take port 0 and report it (nginx).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
