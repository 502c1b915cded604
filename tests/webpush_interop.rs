//! Interoperability of pushrelay's Web Push messages with Mozilla's
//! reference implementations: Python `http_ece` decrypts the `aes128gcm`
//! body (RFC 8188/8291) and `py_vapid` verifies the `Authorization: vapid`
//! header (RFC 8292). Install them with `bash tests/interop/setup.sh`;
//! without them this test fails, unless `PUSHRELAY_SKIP_INTEROP=1` is set.
//!
//! The messages are the ones pushrelay's Web Push client really sent, as
//! the mock push service received them over TLS.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use pushrelay::domain::SubscriptionKeys;
use pushrelay::provider::webpush::{VapidCredentials, WebPush};
use pushrelay::provider::ProviderSettings;
use pushrelay_mock::webpush::MockWebPush;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const INTEROP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");
const VAPID_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";

/// `py_webpush.py <args>` with `input` on stdin: its stdout, or its stderr as the error.
fn python(args: &[&str], input: &[u8]) -> Result<Vec<u8>, String> {
    let py = Path::new(INTEROP).join(".venv/bin/python");
    let mut child = Command::new(&py)
        .arg(Path::new(INTEROP).join("py_webpush.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", py.display()))?;
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn tools_present() -> bool {
    let ok = Path::new(INTEROP).join(".venv/bin/python").exists()
        && python(&["vapid", "vapid t=a.b.c,k=BAAA"], b"").is_err_and(|e| !e.contains("ModuleNotFoundError"));
    if !ok {
        if std::env::var("PUSHRELAY_SKIP_INTEROP").as_deref() == Ok("1") {
            println!("SKIP webpush interop: http_ece / py-vapid missing (PUSHRELAY_SKIP_INTEROP=1)");
            return false;
        }
        panic!("http_ece / py-vapid are missing: run tests/interop/setup.sh (or set PUSHRELAY_SKIP_INTEROP=1 to skip)");
    }
    true
}

#[tokio::test]
async fn mozillas_http_ece_decrypts_and_py_vapid_verifies_what_pushrelay_sent() {
    if !tools_present() {
        return;
    }
    pushrelay::startup::install_crypto_provider();
    let mock = MockWebPush::start().await;
    let creds = VapidCredentials::parse_admin_json(
        serde_json::json!({"vapidPrivateKey": VAPID_PRIVATE, "subject": "mailto:ops@example.com"}).to_string().as_bytes(),
    )
    .unwrap();
    let settings =
        ProviderSettings { webpush_allowed_hosts: vec!["127.0.0.1".into()], extra_ca_pem: Some(mock.ca_pem()), ..ProviderSettings::default() };
    let client = WebPush::new(settings);

    for (name, data) in [
        ("call", BTreeMap::from([("type".to_string(), "incomingcall".to_string()), ("displayname".to_string(), "Zoë 📞 山田".to_string())])),
        ("large", BTreeMap::from([("body".to_string(), "x".repeat(3900))])),
    ] {
        let receiver = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let d: [u8; 32] = receiver.to_bytes().into();
        let auth: [u8; 16] = rand::random();
        let sub = mock.subscribe_with_keys(d, auth, Some(&B64.decode(&creds.public_key).unwrap()));
        let keys = SubscriptionKeys::parse(&sub.p256dh, &sub.auth).unwrap();
        let attempt = client.send_data(&creds, &sub.endpoint, Some(&keys), &data, 30).await;
        assert!(attempt.is_delivered(), "{name}: {attempt:?}");
        let sent = mock.requests().into_iter().last().unwrap();

        let plain = python(&["decrypt", &B64.encode(d), &sub.auth], &sent.body).unwrap_or_else(|e| panic!("{name}: http_ece: {e}"));
        assert_eq!(serde_json::from_slice::<BTreeMap<String, String>>(&plain).unwrap(), data, "{name}");

        let claims: serde_json::Value = serde_json::from_slice(&python(&["vapid", sent.header("authorization").unwrap()], b"").unwrap()).unwrap();
        assert_eq!(claims["aud"], mock.origin(), "{name}");
        assert_eq!(claims["sub"], "mailto:ops@example.com");

        // A flipped bit, or another browser's secret, is refused by http_ece too.
        let mut tampered = sent.body.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(python(&["decrypt", &B64.encode(d), &sub.auth], &tampered).is_err(), "{name}: tampered");
        assert!(python(&["decrypt", &B64.encode(d), &B64.encode([0u8; 16])], &sent.body).is_err(), "{name}: wrong auth");
    }
}
