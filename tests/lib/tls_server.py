# tls_server.py fork|thread CA CERT KEY N: Python's ssl as a server
# (clients.sh, tpm_servers.sh). Prints "ACCEPT 127.0.0.1:PORT" once it
# listens (as s_server does, for start_server), then serves N connections,
# requiring a client certificate, either forking a child per connection
# after loading the key (the child leaves through os._exit: no exit handler
# runs) or with a thread per connection. Each answer names the client's CN,
# the protocol and the pid that did the handshake. Handshake failures are
# printed ("refused: ..."), not fatal: the test decides which connections had
# to fail.
import os, socket, ssl, sys, threading

mode, ca, cert, key, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(ca)
ctx.load_cert_chain(cert, key)  # key: the key-reference file; loaded before any fork
srv = socket.create_server(("127.0.0.1", 0))
print("ACCEPT 127.0.0.1:%d" % srv.getsockname()[1], flush=True)


def serve(conn):
    conn.settimeout(60)
    try:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            peer = tls.getpeercert()
            cn = [v for rdn in peer["subject"] for (k, v) in rdn if k == "commonName"][0]
            tls.recv(4096)
            body = "hello CN=%s (%s, pid %d)\n" % (cn, tls.version(), os.getpid())
            tls.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body.encode())
            try:
                tls.unwrap()  # close_notify: s_client treats a bare EOF as an error
            except (ssl.SSLError, OSError):
                pass
            print("served CN=%s %s pid %d" % (cn, tls.version(), os.getpid()), flush=True)
            return 0
    except (ssl.SSLError, OSError) as e:
        print("refused: %s" % e, flush=True)
        return 1


children, threads = [], []
for i in range(n):
    conn, _ = srv.accept()
    if mode == "fork":
        pid = os.fork()
        if pid == 0:
            srv.close()
            os._exit(serve(conn))
        conn.close()
        children.append(pid)
    else:
        t = threading.Thread(target=serve, args=(conn,))
        t.start()
        threads.append(t)
for t in threads:
    t.join()
for pid in children:
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        print("child %d killed by signal %d" % (pid, os.WTERMSIG(status)), flush=True)
print("done pid %d" % os.getpid(), flush=True)
