#!/usr/bin/env python3
"""Turns the rows ci/bench collected (one JSON object per line, as
mtlsks-bench prints them) into the table it prints and the JSON it writes.

    report.py --meta META.json --rows ROWS.jsonl --json OUT.json

Timed rows ran in rounds; the table shows the best round (load from other
processes only ever slows a row down) and the JSON keeps every round with
its median. Targets are checked, never enforced: the exit status is 0."""

import argparse
import json
import statistics
import sys

ALGS = {"ec": "ECDSA P-256", "rsa-pkcs1": "RSA-2048 PKCS#1", "rsa-pss": "RSA-2048 PSS",
        "rsa": "RSA-2048 (PSS)"}
RATIO_TARGET = 0.95     # provider / raw C_Sign on a session copy of the key
TLS_SOFT_TARGET = 0.90  # handshakes with both keys on the token / with software keys
LOADED_TARGET = 0.02    # what a loaded, unused mtlsks.so may add to a handshake
SIGN_IMPLS = ("raw", "raw-token", "keystore", "provider", "p11prov", "engine", "soft")


def load_rows(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    rows.append({"bench": "unparsed", "failed": 1, "error": line[:200]})
    return rows


class Group:
    """The rounds of one row: same bench, impl, alg, threads and note."""

    def __init__(self):
        self.rows = []

    def ok_rows(self):
        return [r for r in self.rows if not r.get("failed") and r.get("ops", 0) > 0]

    def rate(self):
        """Operations per second: pooled over the rounds for paths that took
        turns in one process, else the best round."""
        ok = self.ok_rows()
        if not ok:
            return None
        if any("paths" in r for r in ok):
            secs = sum(r["seconds"] for r in ok)
            return sum(r["ops"] for r in ok) / secs if secs > 0 else None
        return max(r["ops_per_s"] for r in ok)

    def cpu_rate(self):
        """Operations per CPU second of the measuring threads, pooled: the
        cost of one operation whatever else the machine runs (in-process
        tokens only; the swtpm works in another process)."""
        ok = [r for r in self.ok_rows() if r.get("cpu_seconds")]
        secs = sum(r["cpu_seconds"] for r in ok)
        return sum(r["ops"] for r in ok) / secs if secs > 0 else None

    def best(self, field="ops_per_s"):
        vals = [r[field] for r in self.ok_rows() if field in r]
        return max(vals) if vals else None

    def median(self, field="ops_per_s"):
        vals = [r[field] for r in self.ok_rows() if field in r]
        return statistics.median(vals) if vals else None

    def errors(self):
        return sum(r.get("errors", 0) for r in self.rows)

    def ops(self):
        return sum(r.get("ops", 0) for r in self.rows)

    def failure(self):
        """Why the row has no figure, or None."""
        if self.ok_rows():
            hung = [r for r in self.rows if r.get("hung")]
            return "hung (a thread never returned)" if hung else None
        for r in self.rows:
            if r.get("error"):
                return r["error"]
            if r.get("hung"):
                return "hung (a thread never returned)"
            if r.get("errors"):
                return "every operation failed"
        return "no result"

    def summary(self, field="ops_per_s"):
        return {
            "rate": self.rate() if field == "ops_per_s" else None,
            "cpu_rate": self.cpu_rate() if field == "ops_per_s" else None,
            "best": self.best(field),
            "median": self.median(field),
            "rounds": [r.get(field) for r in self.rows if field in r],
            "errors": self.errors(),
            "failure": self.failure(),
        }


def group(rows, bench, note=None):
    out = {}
    for r in rows:
        if r.get("bench") != bench or r.get("note") != note:
            continue
        k = (r.get("impl"), r.get("alg"), r.get("threads"))
        out.setdefault(k, Group()).rows.append(r)
    return out


def rates(groups):
    """Wall and CPU rates of each group (None where there is none)."""
    return ({k: (v.rate() if v else None) for k, v in groups.items()},
            {k: (v.cpu_rate() if v else None) for k, v in groups.items()})


def ratio(d, a, b):
    return d[a] / d[b] if d[a] and d[b] else None


def fmt_rate(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def cell(groups, k, field="ops_per_s", fmt=fmt_rate):
    g = groups.get(k)
    if g is None:
        return "n/a"
    v = g.rate() if field == "ops_per_s" else g.best(field)
    if v is None:
        return "FAILED"
    s = fmt(v)
    if g.errors():
        total = g.ops() + g.errors()
        s += f" ({100.0 * g.errors() / total:.0f}% err)"
    return s


def table(title, header, body, notes=()):
    print()
    print(title)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)] if body else []
    line = "  ".join(str(h).ljust(w) for h, w in zip(header, widths))
    print("  " + line)
    print("  " + "  ".join("-" * w for w in widths))
    for b in body:
        print("  " + "  ".join(str(x).ljust(w) for x, w in zip(b, widths)))
    for n in notes:
        print("  " + n)


def calls_text(d):
    if not d:
        return "-"
    return ", ".join(f"{k} {v:g}" for k, v in d.items())


def pcap_per_op(rows, impl, alg, what, a, b):
    """TPM commands of one operation: (count at b - count at a) / (b - a)."""
    got = {}
    for r in rows:
        if r.get("bench") == "pcap" and r.get("impl") == impl and r.get("alg") == alg:
            note = r.get("note", "")
            if note in (f"{what}:{a}", f"{what}:{b}"):
                got[int(note.split(":")[1])] = r
    if a not in got or b not in got or b == a:
        return None
    ra, rb = got[a], got[b]
    per = {}
    names = set(ra.get("by_command", {})) | set(rb.get("by_command", {}))
    for n in sorted(names):
        d = (rb.get("by_command", {}).get(n, 0) - ra.get("by_command", {}).get(n, 0)) / (b - a)
        if abs(d) > 1e-9:
            per[n] = round(d, 3)
    return {"total": round((rb["commands"] - ra["commands"]) / (b - a), 3), "by_command": per}


def count_failed(rows, impl, alg, bench, note="tpm-count"):
    for r in rows:
        if (r.get("bench") == bench and r.get("impl") == impl and r.get("alg") == alg
                and r.get("note") == note and (r.get("failed") or r.get("errors"))):
            return r.get("error") or f"{r.get('errors')} failed operations"
    return None


def slow_token_tables(rows, targets, summary):
    """A slow token: SSL_MODE_ASYNC on one thread (tls-async) and HAProxy
    with ssl-mode-async (tls-load against it), async against sync."""
    by_lat = {}
    for r in rows:
        if r.get("bench") == "tls-async":
            by_lat.setdefault((r.get("impl"), r.get("latency_ms")), Group()).rows.append(r)
    body, async_sum = [], []
    for lat in sorted({k[1] for k in by_lat if k[1] is not None}):
        ga, gs = by_lat.get(("async", lat)), by_lat.get(("sync", lat))
        ra, rs = (ga.rate() if ga else None), (gs.rate() if gs else None)
        ca, cs = (ga.cpu_rate() if ga else None), (gs.cpu_rate() if gs else None)
        peak = max((r.get("sign_peak", 0) for r in ga.ok_rows()), default=0) if ga else 0
        inflight = next((r.get("inflight") for r in (ga or gs).rows), None)
        body.append([f"{lat:g} ms", inflight, fmt_rate(ra), fmt_rate(rs),
                     f"{ra / rs:.2f}" if ra and rs else "-",
                     f"{ca / cs:.2f}" if ca and cs else "-", peak or "-"])
        async_sum.append({"latency_ms": lat, "inflight": inflight,
                          "async": ga.summary() if ga else None,
                          "sync": gs.summary() if gs else None,
                          "async_over_sync": ra / rs if ra and rs else None,
                          "async_over_sync_cpu": ca / cs if ca and cs else None,
                          "sign_peak": peak})
        if lat >= 20:
            targets.append({"target": f"SSL_MODE_ASYNC, one thread, {lat:g} ms token: async >= 8 x sync",
                            "met": bool(ra and rs and ra >= 8 * rs),
                            "value": ra / rs if ra and rs else None})
        if lat == 0:
            targets.append({"target": "SSL_MODE_ASYNC, one thread, 0 ms token: async within 3% of sync",
                            "met": bool(ra and rs and abs(ra / rs - 1) <= 0.03),
                            "value": ra / rs if ra and rs else None, "cpu": ca / cs if ca and cs else None})
    if body:
        table("Slow token, one thread: mutual-TLS 1.3 handshakes per second with SSL_MODE_ASYNC "
              "and without (tls-async)",
              ["token adds", "in flight", "async", "sync", "async/sync", "async/sync CPU",
               "C_Sign at once"], body,
              ["handshakes over memory BIOs on one thread; the server's key in the token behind "
               "the shim, which delays each C_Sign;",
               "CPU: per CPU second of the process (the keystore's worker threads included)"])
    summary["slow_token"] = async_sum

    local, remote = group(rows, "sign", "local"), group(rows, "sign", "remote")
    tlocal, tremote = group(rows, "tls", "local"), group(rows, "tls", "remote")
    if remote or tremote:
        body, rem_sum = [], []
        for what, lg, rg, keys in (("signatures", local, remote,
                                    [(a, t) for a in ("ec", "rsa-pss") for t in (1, 2)]),
                                   ("mTLS handshakes", tlocal, tremote, [("ec", 1)])):
            for alg, t in keys:
                lr = lg[("provider", alg, t)].rate() if ("provider", alg, t) in lg else None
                rr = rg[("provider", alg, t)].rate() if ("provider", alg, t) in rg else None
                body.append([what, ALGS[alg], t, cell(lg, ("provider", alg, t)),
                             cell(rg, ("provider", alg, t)), f"{rr / lr:.2f}" if rr and lr else "-",
                             f"{1e6 / rr - 1e6 / lr:.0f}" if rr and lr else "-"])
                rem_sum.append({"what": what, "alg": alg, "threads": t, "local": lr, "remote": rr})
        table("Remote token: the provider through p11-kit-client.so and a p11-kit server on a Unix "
              "socket, against SoftHSM in-process (per second)",
              ["", "key", "thr", "in-process", "remote", "remote/in-process", "us added"], body,
              ["one row at a time (best round); the p11-kit server forks one process per client "
               "connection"])
        summary["remote_token"] = rem_sum

    ha = group(rows, "tls-load", "haproxy")
    ga, gs = ha.get(("async", "ec", 1)), ha.get(("sync", "ec", 1))
    if ga or gs:
        ra, rs = (ga.best() if ga else None), (gs.best() if gs else None)
        table("HAProxy, nbthread 1, 16 clients, 20 ms token: handshakes per second",
              ["ssl-mode-async", "without", "with/without"],
              [[cell(ha, ("async", "ec", 1)), cell(ha, ("sync", "ec", 1)),
                f"{ra / rs:.2f}" if ra and rs else "-"]],
              ["mtlsks-bench tls-load: a new TLS 1.3 connection per request, client "
               "certificates required (best round)"])
        summary["haproxy"] = {"async": ga.summary() if ga else None,
                              "sync": gs.summary() if gs else None,
                              "async_over_sync": ra / rs if ra and rs else None}
        targets.append({"target": "HAProxy, 20 ms token: ssl-mode-async >= 4 x without",
                        "met": bool(ra and rs and ra >= 4 * rs),
                        "value": ra / rs if ra and rs else None})


def counted(rows, impl, alg, bench, note):
    """Whether ci/bench ran a counted row of this kind at all."""
    return any(r.get("bench") == bench and r.get("impl") == impl and r.get("alg") == alg
               and r.get("note") == note for r in rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--meta", required=True)
    ap.add_argument("--rows", required=True)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    with open(args.meta) as f:
        meta = json.load(f)
    rows = load_rows(args.rows)
    a, b = meta.get("count_a", 0), meta.get("count_b", 0)
    targets = []
    summary = {}

    print(f"mtls-keystore benchmark, {meta.get('date')}, commit {meta.get('commit')}"
          f"{' (quick run)' if meta.get('quick') else ''}")
    print(f"  {meta.get('cpu')} x{meta.get('cpus')}, kernel {meta.get('kernel')}, "
          f"{meta.get('openssl')}")
    print(f"  SoftHSM {meta.get('softhsm')}, libp11 engine {meta.get('libp11_engine')}, "
          f"tpm2-openssl {meta.get('tpm2_openssl')}, swtpm {meta.get('swtpm')} "
          f"(TPM: {meta.get('tpm')})")
    p11prov = meta.get("pkcs11_provider") or "none"
    print(f"  pkcs11-provider: {p11prov}"
          + (f" ({meta['pkcs11_provider_module']})" if meta.get("pkcs11_provider_module") else ""))
    print(f"  load average before/after the rows: {meta.get('loadavg_before')} / "
          f"{meta.get('loadavg_after')}")
    print(f"  {meta.get('rounds')} round(s); paths compared in one table take turns in one "
          f"process every {meta.get('slice_s')} s ({meta.get('seconds_per_round')} s each per "
          f"round, pooled);")
    print(f"  TPM rows run alone ({meta.get('seconds_per_round')} s, best round); per-operation "
          f"counts over {b} operations after warm-up")

    # ---- signatures on the token -----------------------------------------
    sign = group(rows, "sign")
    body, sign_sum = [], []
    for alg in ("ec", "rsa-pkcs1", "rsa-pss"):
        for t in (1, 2):
            g = {impl: sign.get((impl, alg, t)) for impl in SIGN_IMPLS}
            best, cpu = rates(g)

            r21, c21 = ratio(best, "provider", "raw"), ratio(cpu, "provider", "raw")
            r2p, c2p = ratio(best, "provider", "p11prov"), ratio(cpu, "provider", "p11prov")
            r23, c23 = ratio(best, "provider", "engine"), ratio(cpu, "provider", "engine")
            rounds = ([p["ops_per_s"] / q["ops_per_s"] for p, q in
                       zip(g["provider"].ok_rows(), g["raw"].ok_rows()) if q["ops_per_s"]]
                      if g["provider"] and g["raw"] else [])
            body.append([ALGS[alg], t] + [cell(sign, (i, alg, t)) for i in g] +
                        [f"{x:.3f}" if x else "-" for x in (r21, c21, r2p, c2p)])
            sign_sum.append({"alg": alg, "threads": t,
                             **{i: (v.summary() if v else None) for i, v in g.items()},
                             "provider_over_raw": r21, "provider_over_raw_rounds": rounds,
                             "provider_over_raw_cpu": c21, "provider_over_p11prov": r2p,
                             "provider_over_p11prov_cpu": c2p, "provider_over_engine": r23,
                             "provider_over_engine_cpu": c23})
            targets.append({"target": f"provider >= {RATIO_TARGET} x raw C_Sign on a session "
                                      f"copy, {ALGS[alg]}, {t} thread(s)",
                            "met": r21 is not None and r21 >= RATIO_TARGET,
                            "value": r21, "cpu": c21})
            if g["p11prov"] is not None:
                targets.append({"target": f"provider >= pkcs11-provider, {ALGS[alg]}, "
                                          f"{t} thread(s)",
                                "met": r2p is not None and r2p >= 1, "value": r2p, "cpu": c2p})
            targets.append({"target": f"provider >= libp11 engine, {ALGS[alg]}, {t} thread(s)",
                            "met": r23 is not None and r23 >= 1, "value": r23, "cpu": c23})
    table("Signatures per second, SoftHSM token (1: raw C_SignInit+C_Sign on a session copy "
          "of the key, 2: provider, P: pkcs11-provider)",
          ["mechanism", "thr", "1 raw", "raw, token obj", "keystore API", "2 provider",
           "P pkcs11-prov", "libp11 engine", "software", "2/1", "2/1 CPU", "2/P", "2/P CPU"],
          body,
          ["ops/s of wall time; CPU: the same ratio from ops per CPU second of the measuring",
           "threads (SoftHSM runs in them), which other load on the machine does not move;",
           "1 raw: C_SignInit+C_Sign on a session-object copy (C_CopyObject, CKA_TOKEN=FALSE),",
           "the token's ceiling; raw, token obj: the same on the token object, which SoftHSM",
           "re-reads from its file at every use; keystore API: the keystore without the",
           "provider (diagnostic); the EVP paths hash a 128-byte message in software, raw",
           "signs a ready hash"])
    summary["sign"] = sign_sum

    init = group(rows, "sign-init")
    body, init_sum = [], {}
    for impl in ("provider", "engine", "soft"):
        g = init.get((impl, "ec", 1))
        v = g.rate() if g else None
        body.append([impl, f"{1e6 / v:.2f}" if v else "-"])
        init_sum[impl] = {"us_per_init": 1e6 / v if v else None}
    table("Diagnostic: EVP_MD_CTX_new + EVP_DigestSignInit_ex + free, ECDSA P-256 (microseconds)",
          ["key", "us"], body,
          ["OpenSSL's per-signature set-up, paid before the token is reached"])
    summary["sign_init_us"] = init_sum

    # ---- instructions (callgrind) ------------------------------------------------
    ic = meta.get("instr_counts", {})
    instr = {}
    for r in rows:
        if r.get("bench") == "instr" and not r.get("failed"):
            instr[(r["what"], r["impl"], r["alg"], r["count"])] = r["instructions"]

    def per_op(what, impl, alg, counts):
        if not counts or len(counts) != 2 or counts[1] == counts[0]:
            return None
        lo, hi = (instr.get((what, impl, alg, n)) for n in counts)
        return (hi - lo) / (counts[1] - counts[0]) if lo is not None and hi is not None else None

    has_p11prov = not str(meta.get("pkcs11_provider", "none")).startswith("none")
    if instr:
        body, in_sum = [], []
        init = {i: per_op("init", i, "ec", ic.get("init")) for i in ("provider", "engine", "soft")}
        for alg in ("ec", "rsa-pkcs1", "rsa-pss"):
            counts = ic.get("ec" if alg == "ec" else "rsa")
            if not counts:
                body.append([ALGS[alg], "full run only"] + [""] * 9)
                continue
            v = {i: per_op("sign", i, alg, counts)
                 for i in ("raw", "raw-token", "provider", "p11prov", "engine", "soft")}
            r21 = v["raw"] / v["provider"] if v["raw"] and v["provider"] else None
            r2p = v["p11prov"] / v["provider"] if v["p11prov"] and v["provider"] else None
            r23 = v["engine"] / v["provider"] if v["engine"] and v["provider"] else None
            body.append([ALGS[alg]] + [f"{x / 1000:,.1f}" if x else
                                       ("-" if i == "p11prov" and not has_p11prov else "FAILED")
                                       for i, x in v.items()] +
                        [f"{v['provider'] - v['raw']:+,.0f}" if r21 else "-",
                         f"{r21:.3f}" if r21 else "-", f"{r2p:.3f}" if r2p else "-",
                         f"{r23:.3f}" if r23 else "-"])
            in_sum.append({"alg": alg, **v, "provider_over_raw": r21,
                           "provider_over_p11prov": r2p, "provider_over_engine": r23})
            for t in targets:
                if t["target"].startswith(f"provider >= {RATIO_TARGET} x raw C_Sign on a "
                                          f"session copy, {ALGS[alg]}, 1 "):
                    t["instructions"] = r21
                elif t["target"].startswith(f"provider >= pkcs11-provider, {ALGS[alg]}, 1 "):
                    t["instructions"] = r2p
                elif t["target"].startswith(f"provider >= libp11 engine, {ALGS[alg]}, 1 "):
                    t["instructions"] = r23
        notes = ["thousands of instructions per signature, one thread, the difference of two "
                 "runs (" + ", ".join(f"{k}: {c[0]} and {c[1]}" for k, c in ic.items()
                                      if len(c) == 2) + " ops);",
                 "2/1, 2/P and 2/engine as rates: above 1 is faster; the token's own work is in "
                 "every column but software"]
        if init["provider"] and init["soft"]:
            notes.append(f"of it, EVP_MD_CTX_new + EVP_DigestSignInit_ex + free (OpenSSL's set-up "
                         f"before any provider signs): provider {init['provider']:,.0f}, "
                         f"engine {init['engine'] or 0:,.0f}, software {init['soft']:,.0f}")
        table("Instructions per signature (callgrind), SoftHSM token",
              ["mechanism", "1 raw", "raw, token obj", "2 provider", "P pkcs11-prov",
               "libp11 engine", "software", "2 - 1", "2/1", "2/P", "2/engine"], body, notes)
        labels = {"provider": "both keys on the token, provider",
                  "p11prov": "both keys on the token, pkcs11-provider",
                  "engine": "both keys on the token, libp11 engine",
                  "soft": "software keys",
                  "soft-loaded": "software keys, mtlsks.so loaded (not used)",
                  "soft-p11prov-loaded": "software keys, pkcs11-provider loaded (not used)",
                  "soft-tpm2-loaded": "software keys, tpm2-openssl loaded (not used)"}
        tls_in = {i: per_op("tls", i, "ec", ic.get("tls")) for i in labels}
        body, notes = [], []
        for i, x in tls_in.items():
            if x is None and i == "soft-tpm2-loaded" and not str(meta.get("tpm")).startswith("swtpm"):
                continue
            if x is None and i in ("p11prov", "soft-p11prov-loaded") and not has_p11prov:
                continue
            extra = (f"+{(x - tls_in['soft']) / 1e6:.2f} ({100 * (x - tls_in['soft']) / tls_in['soft']:.1f}%)"
                     if x and tls_in["soft"] and i != "soft" else "")
            body.append([labels[i], f"{x / 1e6:.2f}" if x else "FAILED", extra])
        table("Instructions per mutual-TLS 1.3 handshake, ECDSA P-256 keys (millions, both sides)",
              ["path", "Minstr", "vs software keys"], body,
              ["a loaded provider with EC and RSA key management and key-file decoders makes "
               "OpenSSL 3.0 build larger",
               "decoder chains for every certificate it parses (docs/performance.md)"])
        if tls_in["soft-loaded"] and tls_in["soft"]:
            extra = (tls_in["soft-loaded"] - tls_in["soft"]) / tls_in["soft"]
            targets.append({"target": f"a loaded, unused mtlsks.so adds <= {100 * LOADED_TARGET:.0f}% "
                                      "instructions to a software-key handshake",
                            "met": extra <= LOADED_TARGET, "value": extra})
        summary["instructions"] = {
            "sign": in_sum, "init": init, "tls": tls_in,
            "tls_loaded_provider_cost": (tls_in["soft-loaded"] - tls_in["soft"]
                                         if tls_in["soft-loaded"] and tls_in["soft"] else None)}

    # ---- token calls -------------------------------------------------------------
    calls = group(rows, "sign", "calls")
    tls_calls = group(rows, "tls", "calls")
    body, calls_sum = [], []
    for impl in ("provider", "p11prov", "engine"):
        if impl == "p11prov" and not has_p11prov:
            continue
        for alg in ("ec", "rsa-pkcs1", "rsa-pss"):
            g = calls.get((impl, alg, 1))
            d = g.ok_rows()[0].get("calls_per_op") if g and g.ok_rows() else None
            body.append([impl, ALGS[alg], "per signature",
                         calls_text(d) if g and g.ok_rows() else (g.failure() if g else "n/a")])
            calls_sum.append({"impl": impl, "alg": alg, "per": "signature", "calls": d})
        for alg in ("ec", "rsa"):
            g = tls_calls.get((impl, alg, 1))
            d = g.ok_rows()[0].get("calls_per_handshake") if g and g.ok_rows() else None
            body.append([impl, ALGS[alg], "per handshake (2 sides)",
                         calls_text(d) if g and g.ok_rows() else (g.failure() if g else "n/a")])
            calls_sum.append({"impl": impl, "alg": alg, "per": "handshake", "calls": d})
            if impl == "provider":
                targets.append({
                    "target": f"steady-state handshake, {ALGS[alg]}: 1 C_SignInit + 1 C_Sign "
                              "per side, nothing else",
                    "met": d == {"C_SignInit": 2, "C_Sign": 2}, "value": d})
    table("PKCS#11 calls in steady state (counted by the shim)", ["path", "key", "per", "calls"],
          body)
    summary["token_calls"] = calls_sum

    # ---- handshakes ----------------------------------------------------------------
    tls = group(rows, "tls")
    loaded = group(rows, "tls", "mtlsks-loaded")
    body, tls_sum = [], []
    for alg in ("ec", "rsa"):
        for t in (1, 2):
            g = {impl: tls.get((impl, alg, t)) for impl in ("provider", "p11prov", "engine", "soft")}
            g["soft, mtlsks.so loaded"] = loaded.get(("soft", alg, t))
            rate, cpu = rates(g)

            ps, cps = ratio(rate, "provider", "soft"), ratio(cpu, "provider", "soft")
            pp, cpp = ratio(rate, "provider", "p11prov"), ratio(cpu, "provider", "p11prov")
            cl, cs = cpu["soft, mtlsks.so loaded"], cpu["soft"]
            body.append([ALGS[alg], t] + [cell(tls, (i, alg, t)) for i in ("provider", "p11prov",
                                                                          "engine", "soft")] +
                        [cell(loaded, ("soft", alg, t))] +
                        [f"{x:.2f}" if x else "-" for x in (ps, cps, pp, cpp)] +
                        [f"{1e6 / cl - 1e6 / cs:.0f}" if cl and cs else "-"])
            tls_sum.append({"alg": alg, "threads": t,
                            **{i: (v.summary() if v else None) for i, v in g.items()},
                            "provider_over_soft": ps, "provider_over_soft_cpu": cps,
                            "provider_over_p11prov": pp, "provider_over_p11prov_cpu": cpp,
                            "loaded_provider_cost_us_cpu": (1e6 / cl - 1e6 / cs)
                            if cl and cs else None})
            targets.append({"target": f"handshakes, both keys on the token >= {TLS_SOFT_TARGET} x "
                                      f"software keys, {ALGS[alg]}, {t} thread(s)",
                            "met": ps is not None and ps >= TLS_SOFT_TARGET, "value": ps,
                            "cpu": cps})
            if has_p11prov:
                targets.append({"target": f"handshakes, provider >= pkcs11-provider, {ALGS[alg]}, "
                                          f"{t} thread(s)",
                                "met": pp is not None and pp >= 1, "value": pp, "cpu": cpp})
    table("Mutual-TLS 1.3 handshakes per second, one process per path, memory BIOs "
          "(both keys per path)",
          ["keys", "thr", "token: provider", "token: pkcs11-prov", "token: engine", "software",
           "software, mtlsks.so loaded", "prov/soft", "prov/soft CPU", "prov/P", "prov/P CPU",
           "loaded mtlsks.so, us CPU/handshake"], body,
          ["P: pkcs11-provider; the last column: what loading mtlsks.so (not using it) adds to "
           "a handshake with software keys"])
    summary["tls"] = tls_sum

    slow_token_tables(rows, targets, summary)

    # ---- start-up ----------------------------------------------------------------------
    st = group(rows, "startup")
    st.update({(k[0], k[1], k[2], "keyref"): v for k, v in group(rows, "startup", "keyref").items()})
    st.update({(k[0], k[1], k[2], "tpm"): v for k, v in group(rows, "startup", "tpm").items()})
    body, st_sum = [], []
    for k, label in ((("provider", "ec", 1), "provider, pkcs11: URI"),
                     (("provider", "ec", 1, "keyref"), "provider, key reference file"),
                     (("engine", "ec", 1), "libp11 engine, pkcs11: URI"),
                     (("soft", "ec", 1), "software key file"),
                     (("provider", "ec", 1, "tpm"), "provider, TPM key file"),
                     (("tpm2-openssl", "ec", 1, "tpm"), "tpm2-openssl, TPM key file")):
        g = st.get(k)
        if g is None:
            continue
        ok = [r for r in g.rows if r.get("ok")]
        if not ok:
            body.append([label, "FAILED: " + (g.failure() or ""), "", "", "", "", ""])
            continue

        def med(f):
            return statistics.median(r[f] for r in ok)

        body.append([label, f"{med('load_ms'):.1f}", f"{med('key_ms'):.1f}",
                     f"{med('first_sign_ms'):.2f}", f"{med('total_ms'):.1f}",
                     f"{med('rss_start_kb') / 1024:.1f}", f"{med('rss_kb') / 1024:.1f}"])
        st_sum.append({"path": label, **{f: med(f) for f in (
            "load_ms", "key_ms", "first_sign_ms", "total_ms", "rss_start_kb", "rss_kb")}})
    table("Start-up, ECDSA P-256 key (medians): load = provider/engine load, key = key load",
          ["path", "load ms", "key ms", "1st sign ms", "total ms", "RSS before MiB",
           "RSS after MiB"], body)
    summary["startup"] = st_sum

    # ---- TPM -----------------------------------------------------------------------------
    if str(meta.get("tpm", "")).startswith("swtpm"):
        tsign = group(rows, "sign", "tpm")
        body, tpm_sum = [], []
        for alg in ("ec", "rsa-pkcs1", "rsa-pss"):
            for t in (1, 2):
                body.append([ALGS[alg], t] + [cell(tsign, (i, alg, t)) for i in
                                              ("keystore", "provider", "tpm2-openssl")])
                tpm_sum.append({"alg": alg, "threads": t, **{
                    i: (tsign[(i, alg, t)].summary() if (i, alg, t) in tsign else None)
                    for i in ("keystore", "provider", "tpm2-openssl")}})
        table("TPM (swtpm) signatures per second",
              ["mechanism", "thr", "ours: keystore API", "ours: provider", "tpm2-openssl"], body)
        ttls = group(rows, "tls", "tpm")
        body = []
        for t in (1, 2):
            body.append([t] + [cell(ttls, (i, "ec", t)) for i in ("provider", "tpm2-openssl")])
            tpm_sum.append({"tls": True, "alg": "ec", "threads": t, **{
                i: (ttls[(i, "ec", t)].summary() if (i, "ec", t) in ttls else None)
                for i in ("provider", "tpm2-openssl")}})
        fails = [f"{i}: {ttls[(i, 'ec', t)].failure()}" for t in (1, 2)
                 for i in ("provider", "tpm2-openssl")
                 if (i, "ec", t) in ttls and ttls[(i, "ec", t)].failure()]
        table("TPM (swtpm) mutual-TLS 1.3 handshakes per second, both ECDSA keys in the TPM",
              ["thr", "ours: provider", "tpm2-openssl"], body, sorted(set(fails))[:4])
        body, cmd_sum = [], []
        # (impl, what, algs, TPM, password): the note of a counted row is
        # WHAT[+pw][@tabrmd]:N (ci/bench).
        variants = [(impl, what, algs, "swtpm", False)
                    for impl in ("provider", "tpm2-openssl")
                    for what, algs in (("sign", ("ec", "rsa-pkcs1", "rsa-pss")), ("tls", ("ec",)))]
        variants += [("provider", what, ("ec",), tpm, pw)
                     for tpm, pw in (("swtpm", True), ("tpm2-abrmd", False), ("tpm2-abrmd", True))
                     for what in ("sign", "tls")]
        per_sign = {}
        for impl, what, algs, tpm, pw in variants:
            tag = what + ("+pw" if pw else "") + ("@tabrmd" if tpm == "tpm2-abrmd" else "")
            for alg in algs:
                note = "tpm-count" if tag == what else f"tpm-count:{tag}"
                if tag != what and not counted(rows, impl, alg, what, note):
                    continue  # no resource manager (or no password rows) in this run
                per = pcap_per_op(rows, impl, alg, tag, a, b)
                bad = count_failed(rows, impl, alg, what, note)
                txt = "-" if per is None else (
                    f"{per['total']:g}: " + ", ".join(
                        f"{k.replace('TPM2_', '')} {v:g}" for k, v in per["by_command"].items()))
                if bad:
                    txt = f"failed: {bad[:90]}"
                body.append([impl, ALGS[alg], "signature" if what == "sign" else "handshake",
                             "bare swtpm" if tpm == "swtpm" else "tpm2-abrmd",
                             "yes" if pw else "no", txt])
                cmd_sum.append({"impl": impl, "alg": alg, "per": what, "tpm": tpm,
                                "password": pw, "commands": per, "failure": bad})
                if impl != "provider":
                    continue
                if what == "sign":
                    per_sign[(tpm, pw, alg)] = per
                if what == "sign" and tpm == "tpm2-abrmd":
                    targets.append({
                        "target": f"TPM behind tpm2-abrmd: one TPM2_Sign per signature, "
                                  f"{'with' if pw else 'without'} a password",
                        "met": per is not None and per["by_command"] == {"TPM2_Sign": 1},
                        "value": per})
                elif what == "sign" and not pw:
                    targets.append({
                        "target": f"TPM, bare swtpm: ContextLoad, Sign, FlushContext per "
                                  f"signature (nothing stays loaded), {ALGS[alg]}",
                        "met": per is not None and not bad and per["by_command"] == {
                            "TPM2_ContextLoad": 1, "TPM2_Sign": 1, "TPM2_FlushContext": 1},
                        "value": per})
                elif what == "sign":
                    targets.append({
                        "target": "TPM, bare swtpm, password: at most 6 commands per signature "
                                  "(a salted HMAC session each)",
                        "met": per is not None and per["total"] <= 6 and
                        per["by_command"].get("TPM2_Sign") == 1,
                        "value": per})
                if what == "tls":
                    ps = per_sign.get((tpm, pw, "ec"))
                    targets.append({
                        "target": f"TPM ({tpm}{', password' if pw else ''}): a mutual-TLS "
                                  f"handshake costs two signatures' commands (one per side)",
                        "met": per is not None and not bad and ps is not None
                        and per["total"] <= 2 * ps["total"],
                        "value": per})
        table("TPM commands per operation (pcap TCTI, as the process sends them; both keys "
              "for a handshake)", ["path", "key", "per", "TPM", "password", "commands"], body)
        summary["tpm"] = tpm_sum
        summary["tpm_commands"] = cmd_sum

    # ---- ACME --------------------------------------------------------------------------------
    acme = {r.get("impl"): r for r in rows if r.get("bench") == "acme"}
    if acme:
        body, acme_sum = [], []
        for impl, label in (("mtls-keystore", "mtls-keystore enroll --acme (SoftHSM)"),
                            ("lego", "lego run (keys on disk)")):
            r = acme.get(impl)
            if r is None:
                continue
            if r.get("failed"):
                body.append([label, "FAILED: " + str(r.get("error", ""))[:80], "", "", ""])
                continue
            body.append([label, f"{r['median_s']:.3f}", f"{r['min_s']:.3f}", f"{r['max_s']:.3f}",
                         f"{r['signatures_median']:g}" if impl == "mtls-keystore" else "0"])
            acme_sum.append({k: r.get(k) for k in ("impl", "runs", "median_s", "min_s", "max_s",
                                                   "signatures_median")})
        ours, lego = acme.get("mtls-keystore"), acme.get("lego")
        runs = ours.get("runs") if ours and not ours.get("failed") else "?"
        table(f"ACME enrollment on a loopback pebble, whole command, median of {runs} "
              "(account reused; new key, order, http-01, finalize, download, import)",
              ["client", "median s", "min s", "max s", "hardware signatures"], body,
              ["hardware signatures: the account key's JWS signatures and the CSR, counted by "
               "the CLI; lego keeps its keys on disk",
               "lego's time is mostly its own wait before it asks whether validation is done"])
        summary["acme"] = acme_sum
        ok_ours = ours is not None and not ours.get("failed")
        targets.append({"target": "ACME: under 1 s per enrollment, EC key on SoftHSM (median)",
                        "met": ok_ours and ours["median_s"] < 1.0,
                        "value": ours["median_s"] if ok_ours else None})
        ok_lego = lego is not None and not lego.get("failed")
        targets.append({"target": "ACME: faster than lego on the same pebble (value: lego's "
                                  "median / ours)",
                        "met": ok_ours and ok_lego and ours["median_s"] < lego["median_s"],
                        "value": lego["median_s"] / ours["median_s"] if ok_ours and ok_lego
                        else None})

    # ---- targets --------------------------------------------------------------------------
    print()
    print("Targets (measured, not enforced)")
    for t in targets:
        v, c = t["value"], t.get("cpu")
        vs = f"{v:.3f}" if isinstance(v, float) else (
            " vs ".join(fmt_rate(x) for x in v) if isinstance(v, list) else "")
        if isinstance(c, float):
            vs += f"; CPU {c:.3f}"
        if isinstance(t.get("instructions"), float):
            vs += f"; instructions {t['instructions']:.3f}"
        elif isinstance(c, list) and None not in c:
            vs += "; CPU " + " vs ".join(fmt_rate(x) for x in c)
        print(f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}" + (f"  ({vs})" if vs else ""))
    failed = [r for r in rows if r.get("failed") or r.get("rc", 0) not in (0,)]
    if failed:
        print()
        print(f"{len(failed)} row(s) did not finish cleanly (see the JSON's rows for each):")
        seen = set()
        for r in failed:
            k = (r.get("bench"), r.get("impl"), r.get("alg"), r.get("threads"), r.get("note"))
            if k in seen:
                continue
            seen.add(k)
            why = r.get("error") or ("hung" if r.get("hung") else
                                     f"{r.get('errors', 0)} failed operations, exit {r.get('rc')}")
            print(f"  {k[0]} {k[1]} {k[2]} t={k[3]}{' ' + k[4] if k[4] else ''}: {why[:150]}")

    with open(args.json, "w") as f:
        json.dump({"meta": meta, "summary": summary, "targets": targets, "rows": rows}, f,
                  indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
