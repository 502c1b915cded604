#!/usr/bin/env python3
"""Kamailio end to end, real processes on loopback only:

  mock APNs  <-  pushrelay  <-HTTP-  Kamailio (contrib/kamailio/kamailio.cfg)  <-SIP-  SIPp phone / SIPp caller

1. The phone (SIPp) REGISTERs through Kamailio with RFC 8599 params; the
   device shows up in pushrelay.
2. Success path, CALLS times, two kinds alternating:
   - "lapsed": the phone's binding is removed from Kamailio (kamcmd ul.rm,
     as when an app sleeps past its expiry);
   - "bound": the binding is still there, but its contact carries
     pn-provider (RFC 8599: push, then wait for the refresh).
   The caller (SIPp UAC) INVITEs the phone; Kamailio suspends the INVITE and
   calls /sip/wake; the mock APNs receives the VoIP push; this script, as the
   phone's push handler, makes the phone REGISTER again; pushrelay releases
   the wake, Kamailio relays the INVITE, the phone answers, the caller sees
   200 OK. INVITE-to-200 is the wake-to-answer latency.
3. Failure paths: a lapsed phone that never comes back -> 480 at the wake
   timeout; a bound phone that misses the push -> one last try on its old
   binding (it answers) after the wake timeout; the caller hangs up while
   waiting -> 487; nobody registered anywhere -> 404 at once, no push.
4. A desk phone without push data: its REGISTER is not sent to pushrelay,
   its calls are relayed at once.

Every wait is bounded; every process is stopped at the end (also on
SIGTERM/SIGINT); the work directory is removed unless something failed
(or KAMAILIO_E2E_KEEP is set).
"""
import json, os, re, secrets, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time
import urllib.error, urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HERE = os.path.join(ROOT, "tests", "kamailio")
CFG = os.path.join(ROOT, "contrib", "kamailio", "kamailio.cfg")
BIN = os.environ.get("PUSHRELAY_BIN_DIR", os.path.join(ROOT, "target", "debug"))
CALLS = max(2, int(os.environ.get("KAMAILIO_E2E_CALLS", "20")))
WAKE_MS = 3000
APP = "com.example.KitchenSink"
USER = "1234"
DESK = "2000"
procs = []


def on_signal(signum, _frame):
    raise SystemExit(f"kamailio e2e: stopped by signal {signum}")


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(cmd, **kw):
    p = subprocess.Popen(cmd, **kw)
    procs.append(p)
    return p


def stop_all():
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in reversed(procs):
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def until(what, check, limit_s):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.01)
    raise SystemExit(f"kamailio e2e: timed out after {limit_s} s waiting for {what}")


def http(method, url, token, body=None, ctype="application/json"):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers={"Authorization": f"Bearer {token}"})
    if data is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def metric(base, token, series):
    """The value of one /metrics series (0 if absent)."""
    status, body = http("GET", f"{base}/metrics", token)
    for line in body.decode().splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def ok(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except Exception:
        return False


def rtt_ms(tmp, pid):
    """SIPp's response time 1 of its one call (start_rtd to rtd), in ms."""
    for name in os.listdir(tmp):
        if name.endswith(f"_{pid}_rtt.csv"):
            rows = [l.split(";") for l in open(os.path.join(tmp, name)) if l[:1].isdigit()]
            if rows:
                return float(rows[-1][1])
    raise SystemExit(f"kamailio e2e: no SIPp rtt file for pid {pid} in {tmp}")


def main(tmp):
    # --- mock APNs ------------------------------------------------------
    mock_out = os.path.join(tmp, "mock")
    mock = start([os.path.join(BIN, "pushrelay-mock"), "--out", mock_out, "--bundle", APP],
                 stdout=subprocess.PIPE, text=True, bufsize=1)
    settings = {}
    deadline = time.monotonic() + 15
    # The mock prints one PUSHRELAY_* line per setting, the CA file last.
    while "PUSHRELAY_TLS_EXTRA_CA_FILE" not in settings and time.monotonic() < deadline:
        line = mock.stdout.readline()
        if not line:
            raise SystemExit("kamailio e2e: pushrelay-mock ended early")
        m = re.match(r"\s+(PUSHRELAY_[A-Z_]+)=(\S+)", line)
        if m:
            settings[m.group(1)] = m.group(2)
    pushes = []  # the mock prints one line per request it answers
    push_times = []

    def pump():
        for line in mock.stdout:
            if line.startswith("apns"):
                pushes.append(line.strip())
                push_times.append(time.monotonic())
    threading.Thread(target=pump, daemon=True).start()

    # --- pushrelay --------------------------------------------------------
    relay_port = free_port()
    admin = "e2e-admin-" + secrets.token_hex(16)
    env = dict(os.environ, **settings)
    env.update({
        "PUSHRELAY_LISTEN": f"127.0.0.1:{relay_port}",
        "PUSHRELAY_DATABASE_URL": f"sqlite://{tmp}/relay.db",
        "PUSHRELAY_MASTER_KEY_FILE": f"{tmp}/master.key",
        "PUSHRELAY_ADMIN_TOKEN": admin,
        "RUST_LOG": "info",
    })
    env.pop("PUSHRELAY_CONFIG", None)
    relay_log = open(os.path.join(tmp, "relay.log"), "w")
    start([os.path.join(BIN, "pushrelay"), "serve"], env=env, stdout=relay_log, stderr=relay_log)
    base = f"http://127.0.0.1:{relay_port}"
    until("pushrelay /readyz", lambda: ok(base + "/readyz"), 15)
    with open(os.path.join(mock_out, "apns-credentials.json"), "rb") as f:
        status, body = http("PUT", f"{base}/v1/apps/{APP}/apns", admin, f.read())
    assert status == 200, body
    keys = {}
    for scope in ("register", "calls"):
        status, body = http("POST", f"{base}/v1/api-keys", admin, {"name": f"kamailio-{scope}", "scopes": [scope], "app": APP})
        assert status in (200, 201), body
        keys[scope] = json.loads(body)["key"]

    # --- Kamailio (foreground, own cfg/pid/ctl socket/port) ----------------
    sip_port = free_port(socket.SOCK_DGRAM)
    ctl = f"unix:{tmp}/kamailio.ctl"
    kam_log = open(os.path.join(tmp, "kamailio.log"), "w")
    start(["kamailio", "-DD", "-E", "-f", CFG, "-Y", tmp, "-P", f"{tmp}/kamailio.pid", "-m", "64", "-M", "16",
           "-A", f"SIP_LISTEN=udp:127.0.0.1:{sip_port}",
           "-A", f'PUSHRELAY_URL="{base}"',
           "-A", f'REGISTER_KEY="{keys["register"]}"',
           "-A", f'CALLS_KEY="{keys["calls"]}"',
           "-A", f'WAKE_TIMEOUT_MS="{WAKE_MS}"',
           "-A", f'CTL_SOCKET="{ctl}"'], stdout=kam_log, stderr=kam_log)

    def kamcmd(*a):
        return subprocess.run(["kamcmd", "-s", ctl, *a], capture_output=True, text=True, timeout=5)
    until("kamailio's control socket", lambda: kamcmd("core.uptime").returncode == 0, 15)

    # --- the phone --------------------------------------------------------
    phone_port = free_port(socket.SOCK_DGRAM)
    voip = secrets.token_hex(32)
    remote = secrets.token_hex(32)  # the app's alert token (RFC 8599 Linphone form: voip&remote)
    start(["sipp", "-sf", os.path.join(HERE, "phone.xml"), "-i", "127.0.0.1", "-p", str(phone_port),
           "-m", str(CALLS + 2), "-nostdin", "-timeout", "170s", "-timeout_error",
           "-trace_err", "-error_file", f"{tmp}/phone-errors.log"],
          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
    sipp_common = ["-i", "127.0.0.1", "-m", "1", "-nostdin", "-timeout", "15s", "-timeout_error"]

    def register(scenario="register.xml", user=USER):
        r = subprocess.run(["sipp", f"127.0.0.1:{sip_port}", "-sf", os.path.join(HERE, scenario), *sipp_common,
                            "-p", str(free_port(socket.SOCK_DGRAM)),
                            "-key", "user", user, "-key", "phone_port", str(phone_port), "-key", "voip", voip,
                            "-key", "remote", remote, "-key", "expires", "3600"], capture_output=True, text=True, timeout=20, cwd=tmp)
        assert r.returncode == 0, f"REGISTER through Kamailio failed: {r.stdout[-500:]}"

    register()
    # Kamailio answers the phone first, then forwards the REGISTER.
    body = until("the device in pushrelay",
                 lambda: (lambda r: r[0] == 200 and json.loads(r[1]) and r[1])(http("GET", f"{base}/v1/users/{USER}/devices", admin)), 5)
    devices = json.loads(body)
    assert len(devices) == 1 and devices[0]["dialect"] == "sip" and devices[0]["channel"] == "APNS", body
    assert devices[0]["token_suffix"] == voip[-8:], body
    print(f"phone registered through Kamailio; pushrelay holds it: {devices[0]['device']} ({devices[0]['channel']})")

    def lapse():
        r = kamcmd("ul.rm", "location", "s:" + USER)  # "s:": the string 1234, not the number
        assert r.returncode == 0 and "error" not in r.stdout.lower(), r.stdout + r.stderr
        r = kamcmd("ul.lookup", "location", "s:" + USER)  # kamcmd exits 0 on RPC errors too
        assert "not found" in (r.stdout + r.stderr).lower(), "still bound after ul.rm: " + r.stdout

    reregister_ms = []

    def call(scenario, user=USER, wake_then_register=False, expect_push=True):
        pushed_before = len(pushes)
        caller = start(["sipp", f"127.0.0.1:{sip_port}", "-sf", os.path.join(HERE, scenario), "-s", user,
                        *sipp_common, "-p", str(free_port(socket.SOCK_DGRAM)), "-trace_rtt", "-rtt_freq", "1",
                        "-trace_err", "-error_file", f"{tmp}/{scenario}-errors.log", "-trace_msg"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
        if wake_then_register:
            until("the VoIP push at the mock APNs", lambda: len(pushes) > pushed_before, 10)
            assert "→ 200" in pushes[-1], pushes[-1]
            t0 = time.monotonic()
            register()  # the phone's push handler: wake up, REGISTER
            reregister_ms.append((time.monotonic() - t0) * 1000)
        code = caller.wait(timeout=30)
        if expect_push:
            assert len(pushes) > pushed_before, f"{scenario}: no push reached the mock APNs"
        else:
            assert len(pushes) == pushed_before, f"{scenario}: unexpected push {pushes[-1]}"
        return code, rtt_ms(tmp, caller.pid)

    latencies = {"lapsed": [], "bound": []}
    for i in range(CALLS):
        kind = "lapsed" if i % 2 == 0 else "bound"
        if kind == "lapsed":
            lapse()
        code, rtt = call("caller.xml", wake_then_register=True)
        assert code == 0, f"call {i + 1} ({kind}): the caller did not get 200 OK (sipp exit {code}); see {tmp}"
        latencies[kind].append(rtt)
    every = latencies["lapsed"] + latencies["bound"]
    print(f"kamailio wake-to-answer over {len(every)} calls: median {statistics.median(every):.0f} ms, "
          f"max {max(every):.0f} ms (INVITE to 200 OK through Kamailio: /sip/wake, push, re-REGISTER, relay, answer; "
          f"lapsed binding median {statistics.median(latencies['lapsed']):.0f} ms, "
          f"pn-provider binding median {statistics.median(latencies['bound']):.0f} ms; "
          f"of which the test's re-REGISTER, a fresh sipp process, median {statistics.median(reregister_ms):.0f} ms)")

    # A lapsed phone that never comes back: 480 at the wake timeout.
    lapse()
    code, rtt = call("caller-480.xml")
    assert code == 0, f"the caller did not get 480 (sipp exit {code}); see {tmp}"
    assert WAKE_MS - 200 <= rtt <= WAKE_MS + 2000, f"480 after {rtt} ms, wake timeout {WAKE_MS} ms"
    print(f"unreachable phone: 480 after {rtt:.0f} ms (wake timeout {WAKE_MS} ms)")

    # A bound phone that misses the push: its old binding gets the INVITE
    # after the wake timeout (here it is alive and answers).
    register()
    code, rtt = call("caller.xml")
    assert code == 0, f"the still-bound phone did not answer after the wake timeout (sipp exit {code}); see {tmp}"
    assert WAKE_MS - 200 <= rtt <= WAKE_MS + 2000, f"200 after {rtt} ms, wake timeout {WAKE_MS} ms"
    print(f"bound phone that missed the push: answered on its old binding after {rtt:.0f} ms")

    # The caller hangs up while the phone is being woken: 487 at once, and
    # Kamailio tells pushrelay (/sip/cancel), which ends the wake and sends
    # the cancel push (an alert to the app's remote token, never VoIP).
    lapse()
    wakes_before = metric(base, admin, 'pushrelay_wake_seconds_count{outcome="cancelled"}')
    code, rtt = call("caller-cancel.xml")
    assert code == 0, f"CANCEL while waiting did not give 487 (sipp exit {code}); see {tmp}"
    assert rtt < 1000, f"487 came {rtt} ms after the CANCEL"
    call_push = len(pushes) - 1
    until("the cancel push to the phone's remote token", lambda: any(remote[-8:] in p for p in pushes[call_push + 1:]), 5)
    cancel_push = next(i for i in range(call_push + 1, len(pushes)) if remote[-8:] in pushes[i])
    after_call_push = (push_times[cancel_push] - push_times[call_push]) * 1000
    until("the wake to end as cancelled", lambda: metric(base, admin, 'pushrelay_wake_seconds_count{outcome="cancelled"}') > wakes_before, 5)
    print(f"caller hung up while waiting: 487 {rtt:.0f} ms after the CANCEL; the cancel push reached the phone's "
          f"remote token {after_call_push:.0f} ms after the call push (the CANCEL left 1000 ms after the 100), "
          f"and the wake ended as cancelled")

    # Nobody registered, in Kamailio or in pushrelay: 404 at once, no push.
    code, rtt = call("caller-404.xml", user="9999", expect_push=False)
    assert code == 0, f"unknown user did not get 404 (sipp exit {code}); see {tmp}"
    assert rtt < 1000, f"404 after {rtt} ms"
    print(f"unknown user: 404 after {rtt:.0f} ms, no push")

    # A desk phone without push data: its REGISTER stays in Kamailio, and
    # its calls are relayed at once, nothing pushed.
    register("register-plain.xml", user=DESK)
    code, rtt = call("caller.xml", user=DESK, expect_push=False)
    assert code == 0, f"the desk phone's call failed (sipp exit {code}); see {tmp}"
    status, body = http("GET", f"{base}/v1/users/{DESK}/devices", admin)
    assert status == 404 or (status == 200 and json.loads(body) == []), (status, body)
    print(f"desk phone without push data: relayed directly, 200 after {rtt:.0f} ms, not sent to pushrelay")

    # Nothing went wrong on the way: no module errors in Kamailio, and no
    # warning from the script (e.g. pushrelay refusing a forwarded REGISTER).
    kam_log.flush()
    errors = [l for l in open(os.path.join(tmp, "kamailio.log"))
              if re.search(r" (ERROR|CRITICAL|BUG|WARNING): ", l)]
    assert not errors, "Kamailio logged errors or warnings:\n" + "".join(errors[:10])


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="pushrelay-kamailio-")
    passed = False
    try:
        main(tmp)
        passed = True
    finally:
        stop_all()
        if not passed:
            print(f"kamailio e2e: FAILED; logs in {tmp}", file=sys.stderr)
        elif os.environ.get("KAMAILIO_E2E_KEEP"):
            print(f"kamailio e2e: logs in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"kamailio e2e: ok in {time.monotonic() - started:.1f} s")
