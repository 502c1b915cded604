//! Interoperability of `pushrelay::jwe` with three independent JWE
//! implementations: panva/jose (npm), jwcrypto (PyPI) and the José CLI
//! (Debian `jose`). Install them with `bash tests/interop/setup.sh`.
//! Without them this test fails, unless `PUSHRELAY_SKIP_INTEROP=1` is set.
//!
//! For each tool: (a) pushrelay encrypts three V2 payloads and the tool
//! decrypts them; (b) the tool encrypts and pushrelay decrypts; (c) a
//! tampered tag is refused by pushrelay (and by the tool).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use pushrelay::domain::{CallEvent, CallId, PushId, PushKey, RingWindow, UserId};
use pushrelay::{jwe, payload};
use rand::RngCore;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const INTEROP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");

struct Tool {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
}

impl Tool {
    fn node() -> Result<Tool, String> {
        let dir = Path::new(INTEROP);
        if !dir.join("node_modules/jose/package.json").exists() {
            return Err("tests/interop/node_modules/jose is missing".into());
        }
        let node = which("node").ok_or("`node` is not on PATH")?;
        Ok(Tool { name: "node jose", program: node, args: vec![path(dir.join("node_jwe.mjs"))] })
    }
    fn jwcrypto() -> Result<Tool, String> {
        let py = Path::new(INTEROP).join(".venv/bin/python");
        if !py.exists() {
            return Err("tests/interop/.venv (jwcrypto) is missing".into());
        }
        Ok(Tool { name: "python jwcrypto", program: py, args: vec![path(Path::new(INTEROP).join("py_jwe.py"))] })
    }
    fn jose_cli() -> Result<Tool, String> {
        which("jose").ok_or("the `jose` command (Debian package jose) is not on PATH")?;
        let bash = which("bash").ok_or("`bash` is not on PATH")?;
        Ok(Tool { name: "jose CLI", program: bash, args: vec![path(Path::new(INTEROP).join("jose_cli.sh"))] })
    }

    /// Runs `<tool> encrypt|decrypt <key_b64>` with `input` on stdin.
    fn run(&self, mode: &str, key_b64: &str, input: &[u8]) -> Result<Vec<u8>, String> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .arg(mode)
            .arg(key_b64)
            .current_dir(INTEROP)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: cannot start {}: {e}", self.name, self.program.display()))?;
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().map_err(|e| format!("{}: {e}", self.name))?;
        writer.join().unwrap().map_err(|e| format!("{}: writing stdin: {e}", self.name))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(format!("{} {mode} exited with {}: {}", self.name, out.status, String::from_utf8_lossy(&out.stderr).trim()))
        }
    }
}

fn path(p: PathBuf) -> String {
    p.to_string_lossy().into_owned()
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(cmd)).find(|p| p.is_file())
}

/// The tool, or `None` after printing a skip line when
/// `PUSHRELAY_SKIP_INTEROP=1`; otherwise a failing test.
fn tool_or_skip(found: Result<Tool, String>) -> Option<Tool> {
    match found {
        Ok(t) => Some(t),
        Err(why) if std::env::var("PUSHRELAY_SKIP_INTEROP").as_deref() == Ok("1") => {
            println!("SKIP jwe interop: {why} (PUSHRELAY_SKIP_INTEROP=1)");
            None
        }
        Err(why) => panic!("{why}: run tests/interop/setup.sh (or set PUSHRELAY_SKIP_INTEROP=1 to skip)"),
    }
}

fn event(push_id: &str, name: &str, number: &str, hunt: &str) -> CallEvent {
    CallEvent {
        call_id: CallId::new(),
        user: UserId::parse("alice").unwrap(),
        device: None,
        push_id: PushId::parse(push_id).unwrap(),
        display_name: name.into(),
        display_number: number.into(),
        hunt_pilot_dn: hunt.into(),
        actor: None,
        ring: RingWindow::starting_now(1_764_057_600_000, 30),
    }
}

fn payloads() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("ascii", payload::v2::build(&event("3f6c1a52-9d0e-4b8e-a6a1-1c2d3e4f5a6b", "Alice Example", "+14085551234", ""))),
        ("unicode", payload::v2::build(&event("a1b2c3d4-0000-4000-8000-000000000002", "📞 Zoë \"Ops\" — 山田太郎 / مركز\n", "*88", "5000"))),
        ("long", payload::v2::build(&event(&"p".repeat(256), &"Very Long Display Name ".repeat(120), &"9".repeat(64), &"8".repeat(32)))),
    ]
}

fn random_key() -> (PushKey, String) {
    let mut k = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut k);
    (PushKey::from_bytes(k), STANDARD.encode(k))
}

fn flip_last_tag_byte(compact: &str) -> String {
    let (head, tag) = compact.rsplit_once('.').unwrap();
    let mut t = URL_SAFE_NO_PAD.decode(tag).unwrap();
    *t.last_mut().unwrap() ^= 0x01;
    format!("{head}.{}", URL_SAFE_NO_PAD.encode(t))
}

fn interop(tool: Tool) {
    let (key, key_b64) = random_key();
    for (label, pt) in payloads() {
        // (a) pushrelay encrypts, the tool decrypts.
        let ours = jwe::encrypt(&key, &pt);
        assert!(ours.starts_with(&format!("{}..", jwe::PROTECTED_HEADER_B64)));
        let got = tool.run("decrypt", &key_b64, ours.as_bytes()).unwrap_or_else(|e| panic!("(a) {label}: {e}"));
        assert_eq!(got, pt, "(a) {label}: {} decrypted pushrelay's JWE to other bytes", tool.name);

        // (b) the tool encrypts, pushrelay decrypts.
        let theirs = tool.run("encrypt", &key_b64, &pt).unwrap_or_else(|e| panic!("(b) {label}: {e}"));
        let theirs = String::from_utf8(theirs).expect("compact JWE is ASCII");
        let theirs = theirs.trim_end();
        let header = URL_SAFE_NO_PAD.decode(theirs.split('.').next().unwrap()).unwrap();
        println!("{:16} {label:8} foreign header {}", tool.name, String::from_utf8_lossy(&header));
        let got = jwe::decrypt(theirs, key.as_bytes()).unwrap_or_else(|e| panic!("(b) {label}: {e} for {} output", tool.name));
        assert_eq!(got, pt, "(b) {label}: pushrelay decrypted {}'s JWE to other bytes", tool.name);
        assert_eq!(jwe::cli_decrypt(&key_b64, &format!("{theirs}\n")).unwrap(), pt, "(b) {label}: cli_decrypt");

        // (c) a tampered tag is refused, with a clear message, on both sides.
        let bad = flip_last_tag_byte(theirs);
        let e = jwe::decrypt(&bad, key.as_bytes()).expect_err("tampered tag accepted by pushrelay");
        assert!(e.reason.starts_with("crypto: authentication tag check failed"), "(c) {label}: {e}");
        assert!(e.to_string().starts_with("undecryptable: crypto:"), "(c) {label}: {e}");
        let bad_ours = flip_last_tag_byte(&ours);
        assert!(tool.run("decrypt", &key_b64, bad_ours.as_bytes()).is_err(), "(c) {label}: {} accepted a tampered tag", tool.name);
    }
}

#[test]
fn node_jose_interoperates_both_ways_and_tampering_is_refused() {
    if let Some(t) = tool_or_skip(Tool::node()) {
        interop(t);
    }
}

#[test]
fn python_jwcrypto_interoperates_both_ways_and_tampering_is_refused() {
    if let Some(t) = tool_or_skip(Tool::jwcrypto()) {
        interop(t);
    }
}

#[test]
fn jose_cli_interoperates_both_ways_and_tampering_is_refused() {
    if let Some(t) = tool_or_skip(Tool::jose_cli()) {
        interop(t);
    }
}

/// The `pushrelay jwe` commands as support staff run them: the binary's
/// output decrypts in node jose, and the binary decrypts jwcrypto's output
/// and refuses it tampered.
#[test]
fn the_cli_binary_interoperates_with_foreign_libraries() {
    let (Some(node), Some(py)) = (tool_or_skip(Tool::node()), tool_or_skip(Tool::jwcrypto())) else { return };
    let bin = env!("CARGO_BIN_EXE_pushrelay");
    let cli = |args: &[&str], input: &[u8]| -> (bool, Vec<u8>, String) {
        let mut child = Command::new(bin).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (_, key_b64) = random_key();
    for (label, pt) in payloads() {
        let (ok, compact, err) = cli(&["jwe", "encrypt", "--key-b64", &key_b64], &pt);
        assert!(ok, "{label}: {err}");
        let got = node.run("decrypt", &key_b64, String::from_utf8(compact).unwrap().trim().as_bytes()).unwrap();
        assert_eq!(got, pt, "{label}: node jose decrypted the CLI's JWE to other bytes");

        let theirs = py.run("encrypt", &key_b64, &pt).unwrap();
        let (ok, got, err) = cli(&["jwe", "decrypt", "--key-b64", &key_b64], &theirs);
        assert!(ok, "{label}: {err}");
        assert_eq!(got, pt);
        let bad = flip_last_tag_byte(String::from_utf8(theirs).unwrap().trim_end());
        let (ok, out, err) = cli(&["jwe", "decrypt", "--key-b64", &key_b64], bad.as_bytes());
        assert!(!ok && out.is_empty(), "{label}: a tampered tag was accepted");
        assert!(err.contains("undecryptable"), "{label}: {err}");
    }
}
