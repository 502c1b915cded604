#!/usr/bin/env python3
"""Kamailio end to end (issue: real clients), real processes on loopback:

  mock APNs  <-  pushrelay  <-HTTP-  Kamailio (contrib/kamailio/kamailio.cfg)  <-SIP-  SIPp phone / SIPp caller

1. The phone (SIPp) REGISTERs through Kamailio with RFC 8599 params; the
   device shows up in pushrelay.
2. Its registration is removed from Kamailio (kamcmd ul.rm): it sleeps.
3. The caller (SIPp UAC) INVITEs it; Kamailio suspends the INVITE and calls
   /sip/wake; the mock APNs receives the VoIP push.
4. This script, acting as the phone's push handler, makes the phone
   REGISTER again; pushrelay releases the wake, Kamailio relays the INVITE,
   the phone answers, the caller sees 200 OK. Repeated CALLS times; the
   INVITE-to-200 time of each is the wake-to-answer latency.
5. Failure path: the phone never comes back; the caller gets 480 at the
   wake timeout.

Every wait is bounded; every process is stopped at the end.
"""
import json, os, re, secrets, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HERE = os.path.join(ROOT, "tests", "kamailio")
CFG = os.path.join(ROOT, "contrib", "kamailio", "kamailio.cfg")
BIN = os.environ.get("PUSHRELAY_BIN_DIR", os.path.join(ROOT, "target", "debug"))
CALLS = int(os.environ.get("KAMAILIO_E2E_CALLS", "20"))
WAKE_MS = 3000
APP = "com.example.KitchenSink"
USER = "1234"
procs = []


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


def until(what, check, limit_s):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.01)
    raise SystemExit(f"kamailio e2e: timed out waiting for {what}")


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


def main():
    tmp = tempfile.mkdtemp(prefix="pushrelay-kamailio-")
    # --- mock APNs ------------------------------------------------------
    mock_out = os.path.join(tmp, "mock")
    mock = start([os.path.join(BIN, "pushrelay-mock"), "--out", mock_out, "--bundle", APP],
                 stdout=subprocess.PIPE, text=True, bufsize=1)
    settings = {}
    while len(settings) < 4:
        line = mock.stdout.readline()
        if not line:
            raise SystemExit("pushrelay-mock ended early")
        m = re.match(r"\s+(PUSHRELAY_[A-Z_]+)=(\S+)", line)
        if m:
            settings[m.group(1)] = m.group(2)
    pushes = []

    def read_pushes():
        import threading

        def pump():
            for line in mock.stdout:
                if line.startswith("apns"):
                    pushes.append((time.monotonic(), line.strip()))
        threading.Thread(target=pump, daemon=True).start()
    read_pushes()

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
    relay_log = open(os.path.join(tmp, "relay.log"), "w")
    start([os.path.join(BIN, "pushrelay"), "serve"], env=env, stdout=relay_log, stderr=relay_log)
    base = f"http://127.0.0.1:{relay_port}"
    until("pushrelay /readyz", lambda: _ok(base + "/readyz"), 15)
    with open(os.path.join(mock_out, "apns-credentials.json"), "rb") as f:
        status, body = http("PUT", f"{base}/v1/apps/{APP}/apns", admin, f.read())
    assert status == 200, body
    keys = {}
    for scope in ("register", "calls"):
        status, body = http("POST", f"{base}/v1/api-keys", admin, {"name": f"kamailio-{scope}", "scopes": [scope], "app": APP})
        assert status == 201, body
        keys[scope] = json.loads(body)["key"]

    # --- Kamailio ---------------------------------------------------------
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
    kamcmd = lambda *a: subprocess.run(["kamcmd", "-s", ctl, *a], capture_output=True, text=True, timeout=5)
    until("kamailio's control socket", lambda: kamcmd("core.uptime").returncode == 0, 15)

    # --- the phone --------------------------------------------------------
    phone_port = free_port(socket.SOCK_DGRAM)
    voip = secrets.token_hex(32)
    phone = start(["sipp", "-sf", os.path.join(HERE, "phone.xml"), "-i", "127.0.0.1", "-p", str(phone_port),
                   "-m", str(CALLS), "-nostdin", "-timeout", "170s", "-timeout_error",
                   "-trace_err", "-error_file", f"{tmp}/phone-errors.log"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
    sipp_common = ["-i", "127.0.0.1", "-m", "1", "-nostdin", "-timeout", "15s", "-timeout_error"]

    def register():
        r = subprocess.run(["sipp", f"127.0.0.1:{sip_port}", "-sf", os.path.join(HERE, "register.xml"), *sipp_common,
                            "-p", str(free_port(socket.SOCK_DGRAM)),
                            "-key", "user", USER, "-key", "phone_port", str(phone_port), "-key", "voip", voip,
                            "-key", "expires", "3600"], capture_output=True, text=True, timeout=20, cwd=tmp)
        assert r.returncode == 0, f"REGISTER through Kamailio failed: {r.stdout[-500:]}"

    register()
    # Kamailio answers the phone first, then forwards the REGISTER.
    body = until("the device in pushrelay", lambda: (lambda r: r[0] == 200 and r[1])(http("GET", f"{base}/v1/users/{USER}/devices", admin)), 5)
    devices = json.loads(body)
    assert len(devices) == 1 and devices[0]["dialect"] == "sip", body
    print(f"phone registered through Kamailio; pushrelay holds it: {devices[0]['device']} ({devices[0]['channel']})")

    def asleep():
        r = kamcmd("ul.rm", "location", "s:" + USER)  # "s:": not the number 1234
        assert "error" not in r.stdout, r.stdout
        assert r.returncode == 0, r.stdout + r.stderr

    def call(scenario, expect_push_then_register):
        pushed_before = len(pushes)
        caller = subprocess.Popen(["sipp", f"127.0.0.1:{sip_port}", "-sf", os.path.join(HERE, scenario), "-s", USER,
                                   *sipp_common, "-p", str(free_port(socket.SOCK_DGRAM)),
                                   "-trace_rtt", "-rtt_freq", "1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
        if expect_push_then_register:
            until("the VoIP push at the mock APNs", lambda: len(pushes) > pushed_before, 10)
            assert " 200" in pushes[-1][1] or "→ 200" in pushes[-1][1], pushes[-1]
            register()  # the phone's push handler: wake up, REGISTER
        code = caller.wait(timeout=30)
        rtt = _rtt(tmp, caller.pid)
        return code, rtt

    latencies = []
    for i in range(CALLS):
        asleep()
        code, rtt = call("caller.xml", True)
        assert code == 0, f"call {i + 1}: the caller did not get 200 OK (sipp exit {code}); see {tmp}"
        latencies.append(rtt)
    print(f"kamailio wake-to-answer over {CALLS} calls: median {statistics.median(latencies):.0f} ms, "
          f"max {max(latencies):.0f} ms (INVITE to 200 OK through Kamailio, push and re-REGISTER included)")

    # Failure path: the phone never comes back.
    asleep()
    pushed = len(pushes)
    code, rtt = call("caller-480.xml", False)
    assert code == 0, f"the caller did not get 480 (sipp exit {code}); see {tmp}"
    assert len(pushes) > pushed, "the phone was pushed before the 480"
    assert WAKE_MS - 200 <= rtt <= WAKE_MS + 2000, f"480 after {rtt} ms, wake timeout {WAKE_MS} ms"
    print(f"unreachable phone: 480 after {rtt:.0f} ms (wake timeout {WAKE_MS} ms)")
    phone.wait(timeout=10) if phone.poll() is None and False else None


def _ok(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except Exception:
        return False


def _rtt(tmp, pid):
    """SIPp's response time 1 (INVITE sent to final response) of one call, ms."""
    for name in os.listdir(tmp):
        if name.endswith(f"_{pid}_rtt.csv"):
            rows = [l.split(";") for l in open(os.path.join(tmp, name)) if l[:1].isdigit()]
            if rows:
                return float(rows[-1][1])
    raise SystemExit(f"no SIPp rtt file for pid {pid} in {tmp}")


if __name__ == "__main__":
    started = time.monotonic()
    try:
        main()
    finally:
        stop_all()
    print(f"kamailio e2e: ok in {time.monotonic() - started:.1f} s")
