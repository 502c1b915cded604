//! The binary as a user runs it.
use std::io::Write;
use std::process::{Command, Stdio};

fn pushrelay() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pushrelay"))
}

fn run(args: &[&str], stdin: &[u8], dir: &std::path::Path) -> (i32, String, String) {
    let mut child = pushrelay()
        .args(args)
        .current_dir(dir)
        .env_remove("PUSHRELAY_DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn jwe_encrypt_then_decrypt_round_trips_and_a_tampered_tag_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = "JH/VEZ9YjinNA+AvUrjI+ncgVVycPbIVJixFOOm/xIU=";
    let plain = br#"{"type":"incomingcall","pushid":"p1","displayname":"Zoe \u00eb","displaynumber":"1001","payloadversion":"V2","huntpilotdn":"","ringexpiretime":"1764057600000"}"#;
    let (code, jwe, err) = run(&["jwe", "encrypt", "--key-b64", key], plain, dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(jwe.starts_with("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0.."), "{jwe}");
    let (code, out, err) = run(&["jwe", "decrypt", "--key-b64", key], jwe.as_bytes(), dir.path());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.as_bytes(), plain);
    let mut tampered = jwe.trim().to_string();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let (code, out, err) = run(&["jwe", "decrypt", "--key-b64", key], tampered.as_bytes(), dir.path());
    assert_ne!(code, 0);
    assert!(out.is_empty());
    assert!(err.contains("undecryptable"), "{err}");
}

#[test]
fn jwe_encrypt_refuses_a_key_of_the_wrong_length() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(&["jwe", "encrypt", "--key-b64", "c2hvcnQ="], b"{}", dir.path());
    assert_ne!(code, 0);
    assert!(err.contains("32"), "{err}");
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), "[calls]\nring_seconds = 900\n").unwrap();
    let (code, _, err) = run(&["check-config", "--config", "c.toml"], b"", dir.path());
    assert_eq!(code, 78, "a configuration error is EX_CONFIG, not a usage error");
    assert!(err.contains("calls.ring_seconds"), "{err}");
    std::fs::write(dir.path().join("ok.toml"), "listen = \"127.0.0.1:9999\"\n").unwrap();
    let (code, out, err) = run(&["check-config", "--config", "ok.toml"], b"", dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration ok"), "{out}");
}

#[test]
fn migrate_creates_the_sqlite_file_and_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(&["migrate"], b"", dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("migrations applied"), "{out}");
    assert!(dir.path().join("pushrelay.db").exists());
    assert!(dir.path().join("pushrelay.master.key").exists());
}

/// `pushrelay serve` with no flags: SQLite in the working directory, an
/// admin token printed once, `/healthz` answering.
#[test]
fn serve_with_no_setup_prints_an_admin_token_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let first = start_and_read_line(dir.path(), port);
    assert!(first.starts_with("admin token (shown once"), "{first}");
    let token = first.rsplit(' ').next().unwrap().trim().to_string();
    assert!(dir.path().join("pushrelay.db").exists());
    // Second start: no new token, the first one still works.
    let mut child = pushrelay()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ok = wait_http(port, "/v1/users/nobody/devices", Some(&token));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "token printed again");
    assert!(ok.starts_with("HTTP/1.1 404"), "{ok}");
}

fn start_and_read_line(dir: &std::path::Path, port: u16) -> String {
    use std::io::BufRead;
    let mut child = pushrelay()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let health = wait_http(port, "/healthz", None);
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let _ = child.kill();
    let _ = child.wait();
    line
}

/// A raw HTTP/1.1 GET, retried until the server is up (10 s at most).
fn wait_http(port: u16, path: &str, bearer: Option<&str>) -> String {
    use std::io::Read;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
            let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if !out.is_empty() {
                return out;
            }
        }
        assert!(std::time::Instant::now() < deadline, "server did not come up");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `rotate-master-key` re-encrypts every secret; the relay then works with
/// the new key only.
#[tokio::test]
async fn rotate_master_key_re_encrypts_everything() {
    use crate::helpers::*;
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    let (k, _) = device_key();
    assert_eq!(app.put_uds("alice", "pw-alice", "phone", uds_xml(&apns_token(), "APNS", &k, APP)).await.status(), 200);
    let before = app.raw_secret_columns().await;
    let mut app = app;
    app.stop().await;
    let (new_key, stdout) = app.rotate_master_key();
    assert!(stdout.contains("re-sealed 3 secrets"), "{stdout}");
    let after = app.raw_secret_columns().await;
    assert_ne!(before, after);
    app.env.insert("PUSHRELAY_MASTER_KEY_FILE".into(), new_key.display().to_string());
    let app = app.restart().await;
    let r: serde_json::Value = app.post_call(&serde_json::json!({"user": "alice", "pushid": "p"})).await.json().await.unwrap();
    assert_eq!(r["deliveries"][0]["outcome"], "delivered", "{r}");
}

#[test]
fn the_config_file_can_come_from_pushrelay_config_and_usage_errors_stay_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "log_format = \"xml\"\n").unwrap();
    let out = pushrelay().args(["check-config"]).current_dir(dir.path()).env("PUSHRELAY_CONFIG", "bad.toml").output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("log_format"), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, _, _) = run(&["serve", "--no-such-flag"], b"", dir.path());
    assert_eq!(code, 2, "clap's usage error");
}

#[test]
fn jwe_keys_come_from_a_file_or_the_environment_and_a_closed_pipe_is_a_quiet_exit() {
    let dir = tempfile::tempdir().unwrap();
    let key = "JH/VEZ9YjinNA+AvUrjI+ncgVVycPbIVJixFOOm/xIU=";
    std::fs::write(dir.path().join("k"), format!("{key}\n")).unwrap();
    let (code, jwe, err) = run(&["jwe", "encrypt", "--key-file", "k"], b"{}", dir.path());
    assert_eq!(code, 0, "{err}");
    let out = pushrelay()
        .args(["jwe", "decrypt"])
        .env("PUSHRELAY_JWE_KEY", key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(jwe.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!((out.status.code(), out.stdout.as_slice()), (Some(0), &b"{}"[..]), "{}", String::from_utf8_lossy(&out.stderr));
    // Two key sources at once, or none: refused by the parser.
    let (code, _, _) = run(&["jwe", "encrypt", "--key-file", "k", "--key-b64", key], b"{}", dir.path());
    assert_eq!(code, 2);
    let (code, _, err) = run(&["jwe", "encrypt"], b"{}", dir.path());
    assert_eq!(code, 2, "{err}");
    // `… | head -c1`: the reader goes away; no panic, exit 0.
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(1 << 20));
    let sh = "\"$0\" jwe encrypt --key-file k < big.json | head -c1 >/dev/null; echo \"exit=${PIPESTATUS[0]}\"".to_string();
    std::fs::write(dir.path().join("big.json"), big).unwrap();
    let out = Command::new("bash").args(["-c", &sh, env!("CARGO_BIN_EXE_pushrelay")]).current_dir(dir.path()).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("exit=0"), "{stdout} {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal_and_json_is_a_config_key() {
    let dir = tempfile::tempdir().unwrap();
    for (config, json) in [("", false), ("log_format = \"json\"\n", true)] {
        std::fs::write(dir.path().join("c.toml"), config).unwrap();
        let out = pushrelay().args(["migrate", "--config", "c.toml"]).current_dir(dir.path()).env("RUST_LOG", "info").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!err.contains('\u{1b}'), "ANSI codes in a piped log: {err:?}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.is_empty()).collect();
        assert!(!lines.is_empty(), "the first migrate logs the new master key");
        for l in lines {
            assert_eq!(serde_json::from_str::<serde_json::Value>(l).is_ok(), json, "{l}");
        }
        let _ = std::fs::remove_file(dir.path().join("pushrelay.db"));
        let _ = std::fs::remove_file(dir.path().join("pushrelay.master.key"));
    }
}
