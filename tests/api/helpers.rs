//! `spawn_app()`: the real relay on 127.0.0.1:0 with a fresh temp SQLite
//! file and master key, plus one helper per endpoint.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pushrelay::config::{CliOverrides, Settings};
use pushrelay::startup::Application;
use std::collections::HashMap;
use std::path::PathBuf;
use tokio::sync::oneshot;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const APP: &str = "com.example.KitchenSink";
pub const KEY_B64: &str = "JH/VEZ9YjinNA+AvUrjI+ncgVVycPbIVJixFOOm/xIU=";
pub const APNS_TOKEN: &str = "5c0a2f1e9b7d4c3a8e6f1d2b3c4a5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn fixture(path: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// A fresh P-256 .p8 (PKCS#8 PEM), as Apple hands it out.
pub fn p8_pem() -> String {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap().serialize_pem()
}

pub fn apns_token_body(p8: &str) -> serde_json::Value {
    serde_json::json!({"keyId": "73Q8JZND1V", "bundleId": APP, "teamId": "D7A3215KHV", "keyFile": STANDARD.encode(p8)})
}

/// A valid service account (fixtures/admin/fcm-valid.json, test-only RSA key).
pub fn fcm_body() -> serde_json::Value {
    serde_json::from_slice(&fixture("admin/fcm-valid.json")).unwrap()
}

pub fn uds_xml(token: &str, channel: &str, key: &str, app: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<token>\n  <pushNotifyToken>{token}</pushNotifyToken>\n  <pushChannelType>{channel}</pushChannelType>\n  <key>{key}</key>\n  <algorithm>A256GCM</algorithm>\n  <application>{app}</application>\n  <payloadVersion>V2</payloadVersion>\n</token>\n"
    )
}

/// The database a test relay uses: a fresh SQLite file in `dir`, or — when
/// `PUSHRELAY_TEST_DATABASE_URL` names a PostgreSQL server — a fresh
/// database created on it for this test.
pub async fn test_database_url(dir: &std::path::Path) -> String {
    match std::env::var("PUSHRELAY_TEST_DATABASE_URL") {
        Ok(base) if base.starts_with("postgres") => {
            use sqlx::Connection;
            let base = base.trim_end_matches('/').to_string();
            let name = format!("pushrelay_test_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&format!("{base}/postgres")).await.expect("connect to the test PostgreSQL server");
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
            format!("{base}/{name}")
        }
        _ => format!("sqlite://{}", dir.join("relay.db").display()),
    }
}

pub fn on_postgres() -> bool {
    std::env::var("PUSHRELAY_TEST_DATABASE_URL").map(|u| u.starts_with("postgres")).unwrap_or(false)
}

/// The settings every test relay starts from: port 0, a fresh database,
/// a master key in `dir`, the test admin token.
pub async fn base_env(dir: &std::path::Path) -> HashMap<String, String> {
    let mut env = HashMap::new();
    env.insert("PUSHRELAY_LISTEN".to_string(), "127.0.0.1:0".to_string());
    env.insert("PUSHRELAY_DATABASE_URL".to_string(), test_database_url(dir).await);
    env.insert("PUSHRELAY_MASTER_KEY_FILE".to_string(), dir.join("master.key").display().to_string());
    env.insert("PUSHRELAY_ADMIN_TOKEN".to_string(), ADMIN_TOKEN.to_string());
    env
}

pub async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let env = base_env(dir.path()).await;
    spawn_with(dir, env).await
}

pub async fn spawn_with(dir: tempfile::TempDir, env: HashMap<String, String>) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        pushrelay::telemetry::init_tracing(Default::default());
    }
    pushrelay::startup::install_crypto_provider();
    // `CONFIG_FILE` in the map names a TOML file (for keys with no env form).
    let file = env.get("CONFIG_FILE").map(PathBuf::from);
    let settings = Settings::load_from(file.as_deref(), &env, &CliOverrides::default()).expect("test settings");
    let app = Application::build(settings).await.expect("build app");
    let base = format!("http://{}", app.local_addr());
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    TestApp { base, client: reqwest::Client::new(), dir, env, stop: Some(tx), handle: Some(handle) }
}

impl TestApp {
    pub fn database_url(&self) -> &str {
        &self.env["PUSHRELAY_DATABASE_URL"]
    }

    /// Every secret-bearing column, read straight from the database.
    pub async fn raw_secret_columns(&self) -> String {
        use sqlx::Row;
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(self.database_url()).await.unwrap();
        let mut out = String::new();
        for q in [
            "SELECT secret FROM app_credentials",
            "SELECT COALESCE(push_key, '') FROM devices",
            "SELECT COALESCE(channel_secret, '') FROM devices",
            "SELECT COALESCE(password_hash, '') FROM users",
            "SELECT value FROM settings",
        ] {
            for row in sqlx::query(q).fetch_all(&pool).await.unwrap() {
                out.push_str(&row.get::<String, _>(0));
                out.push('\n');
            }
        }
        pool.close().await;
        out
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `pushrelay rotate-master-key` against this relay's database, to a new
    /// key file in its folder: (the new key file, stdout).
    pub fn rotate_master_key(&self) -> (PathBuf, String) {
        let new_key = self.dir.path().join("new.key");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushrelay"))
            .args(["rotate-master-key", "--database-url", self.database_url(), "--new-key-file", new_key.to_str().unwrap()])
            .env("PUSHRELAY_MASTER_KEY_FILE", &self.env["PUSHRELAY_MASTER_KEY_FILE"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (new_key, String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stop the server (graceful) and start a new one on the same files.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        spawn_with(dir, self.env.clone()).await
    }

    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("server task").expect("server ran");
        }
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(ADMIN_TOKEN)
    }

    pub async fn put_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.admin(reqwest::Method::PUT, path).json(body).send().await.unwrap()
    }

    pub async fn put_apns(&self, app: &str, body: &serde_json::Value) -> reqwest::Response {
        self.put_json(&format!("/v1/apps/{app}/apns"), body).await
    }

    pub async fn put_fcm(&self, app: &str, body: &serde_json::Value) -> reqwest::Response {
        self.put_json(&format!("/v1/apps/{app}/fcm"), body).await
    }

    pub async fn put_user(&self, user: &str, password: &str) -> reqwest::Response {
        self.put_json(&format!("/v1/users/{user}"), &serde_json::json!({ "password": password })).await
    }

    pub async fn put_uds(&self, user: &str, password: &str, device: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .put(self.url(&format!("/cucm-uds/user/{user}/device/{device}/devicetoken")))
            .basic_auth(user, Some(password))
            .header("content-type", "application/xml")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete_uds(&self, user: &str, password: &str, device: &str) -> reqwest::Response {
        self.client
            .delete(self.url(&format!("/cucm-uds/user/{user}/device/{device}/devicetoken")))
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap()
    }

    pub async fn devices(&self, user: &str) -> serde_json::Value {
        let r = self.admin(reqwest::Method::GET, &format!("/v1/users/{user}/devices")).send().await.unwrap();
        assert_eq!(r.status(), 200, "devices of {user}");
        r.json().await.unwrap()
    }

    /// APNs + FCM credentials for `APP` and a user `alice` / `pw-alice`.
    pub async fn with_app_and_user(&self) {
        assert_eq!(self.put_apns(APP, &apns_token_body(&p8_pem())).await.status(), 200);
        assert_eq!(self.put_fcm(APP, &fcm_body()).await.status(), 200);
        assert_eq!(self.put_user("alice", "pw-alice").await.status(), 201);
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The mock providers a relay under test talks to, over TLS on loopback.
pub struct Mocks {
    pub apns: pushrelay_mock::apns::MockApns,
    pub apns_dev: pushrelay_mock::apns::MockApns,
    pub fcm: pushrelay_mock::fcm::MockFcm,
    pub hms: pushrelay_mock::hms::MockHms,
    pub webpush: pushrelay_mock::webpush::MockWebPush,
    pub p8: String,
    pub key_id: String,
    pub team_id: String,
    pub service_account: String,
}

pub const FCM_PROJECT: &str = "pushrelay-test";
/// The Huawei app the HMS mock knows (app id = OAuth client id) and its secret.
pub const HMS_APP_ID: &str = "104567891";
pub const HMS_SECRET: &str = "hms-client-secret-0123456789";
/// The VAPID key pair of the tests (RFC 8291 appendix A's sender key).
pub const VAPID_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
pub const VAPID_PUBLIC: &str = "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";

/// Start mock APNs (production + sandbox) and FCM sharing one test CA, and a
/// relay that trusts it and points at them.
pub async fn spawn_app_with_mocks() -> (TestApp, Mocks) {
    spawn_app_with_mocks_and_config("").await
}

/// Same, with extra TOML configuration (e.g. `sip.user_agents` rules).
pub async fn spawn_app_with_mocks_and_config(toml: &str) -> (TestApp, Mocks) {
    spawn_app_with_mocks_and_env(toml, &[]).await
}

/// Same, with extra TOML configuration and `PUSHRELAY_*` variables.
pub async fn spawn_app_with_mocks_and_env(toml: &str, extra: &[(&str, &str)]) -> (TestApp, Mocks) {
    use pushrelay_mock::{apns::*, fcm::MockFcm, fixtures, tls::TestPki};
    pushrelay::startup::install_crypto_provider();
    let pki = TestPki::generate();
    let (p8, key_id) = fixtures::apns_p8();
    let team_id = "D7A3215KHV".to_string();
    let cfg = |sandbox| MockApnsConfig {
        sandbox,
        bundles: vec![APP.to_string()],
        keys: vec![MockApnsKey { team_id: team_id.clone(), key_id: key_id.clone(), p8_pem: p8.clone() }],
        token_update_limit: Some(std::time::Duration::from_secs(20 * 60)),
        pki: Some(pki.clone()),
    };
    let apns = MockApns::start(cfg(false)).await;
    let apns_dev = MockApns::start(cfg(true)).await;
    let fcm = MockFcm::start_with_pki(pki.clone()).await;
    let service_account = fixtures::service_account_json(&fcm.token_uri(), FCM_PROJECT);
    fcm.register_service_account(&service_account);
    let hms = pushrelay_mock::hms::MockHms::start_with_pki(pki.clone()).await;
    hms.register_app(HMS_APP_ID, HMS_SECRET);
    let webpush = pushrelay_mock::webpush::MockWebPush::start_with_pki(pki.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("mock-ca.pem");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    let mut env = base_env(dir.path()).await;
    env.insert("PUSHRELAY_APNS_PRODUCTION_URL".to_string(), apns.url());
    env.insert("PUSHRELAY_APNS_SANDBOX_URL".to_string(), apns_dev.url());
    env.insert("PUSHRELAY_FCM_BASE_URL".to_string(), fcm.base_url());
    env.insert("PUSHRELAY_HMS_TOKEN_URL".to_string(), hms.token_url());
    env.insert("PUSHRELAY_HMS_BASE_URL".to_string(), hms.base_url());
    // The Web Push mock is on loopback: listed exactly, as interface.md §9 asks.
    env.insert("PUSHRELAY_WEBPUSH_ALLOWED_HOSTS".to_string(), "127.0.0.1".to_string());
    env.insert("PUSHRELAY_TLS_EXTRA_CA_FILE".to_string(), ca.display().to_string());
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    if !toml.is_empty() {
        let f = dir.path().join("relay.toml");
        std::fs::write(&f, toml).unwrap();
        env.insert("CONFIG_FILE".to_string(), f.display().to_string());
    }
    let app = spawn_with(dir, env).await;
    (app, Mocks { apns, apns_dev, fcm, hms, webpush, p8, key_id, team_id, service_account })
}

impl Mocks {
    pub fn apns_body(&self) -> serde_json::Value {
        serde_json::json!({"keyId": self.key_id, "bundleId": APP, "teamId": self.team_id, "keyFile": STANDARD.encode(&self.p8)})
    }
    pub fn fcm_body(&self) -> serde_json::Value {
        serde_json::json!({"serviceAccount": STANDARD.encode(&self.service_account)})
    }
    pub fn hms_body(&self) -> serde_json::Value {
        serde_json::json!({"appId": HMS_APP_ID, "clientSecret": HMS_SECRET})
    }
    pub fn webpush_body(&self) -> serde_json::Value {
        serde_json::json!({"vapidPrivateKey": VAPID_PRIVATE, "subject": "mailto:ops@example.com"})
    }
    /// A browser subscription at the Web Push mock, bound to the tests' VAPID key.
    pub fn subscription(&self) -> pushrelay_mock::webpush::Subscription {
        use base64::Engine;
        let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(VAPID_PUBLIC).unwrap();
        self.webpush.subscribe(Some(&key))
    }
}

impl TestApp {
    /// APNs token-auth and FCM credentials pointing at the mocks, user alice.
    pub async fn with_mock_credentials(&self, m: &Mocks) {
        assert_eq!(self.put_apns(APP, &m.apns_body()).await.status(), 200);
        assert_eq!(self.put_fcm(APP, &m.fcm_body()).await.status(), 200);
        assert_eq!(self.put_user("alice", "pw-alice").await.status(), 201);
    }

    /// Huawei and Web Push credentials for APP pointing at the mocks, user alice.
    pub async fn with_hms_and_webpush(&self, m: &Mocks) {
        assert_eq!(self.put_json(&format!("/v1/apps/{APP}/hms"), &m.hms_body()).await.status(), 200);
        assert_eq!(self.put_json(&format!("/v1/apps/{APP}/webpush"), &m.webpush_body()).await.status(), 200);
        assert_eq!(self.put_user("alice", "pw-alice").await.status(), 201);
    }

    /// `POST /v1/apps/{APP}/test-push` with the admin token: the answer.
    pub async fn test_push(&self, body: &serde_json::Value) -> serde_json::Value {
        let r = self.admin(reqwest::Method::POST, &format!("/v1/apps/{APP}/test-push")).json(body).send().await.unwrap();
        r.json().await.unwrap()
    }

    /// `PUT /v1/users/{user}/devices/{device}` with the admin token.
    pub async fn put_native(&self, user: &str, device: &str, body: &serde_json::Value) -> reqwest::Response {
        self.admin(reqwest::Method::PUT, &format!("/v1/users/{user}/devices/{device}")).json(body).send().await.unwrap()
    }

    /// APNs token-auth credentials for `app` with bundle id `bundle` (the mock learns the bundle).
    pub async fn put_mock_apns(&self, m: &Mocks, app: &str, bundle: &str) {
        m.apns.register_bundle(bundle);
        m.apns_dev.register_bundle(bundle);
        let mut body = m.apns_body();
        body["bundleId"] = serde_json::json!(bundle);
        let r = self.put_apns(app, &body).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    pub async fn post_call(&self, body: &serde_json::Value) -> reqwest::Response {
        self.admin(reqwest::Method::POST, "/v1/calls").json(body).send().await.unwrap()
    }
}

/// A fresh random device key (standard base64) and its bytes.
pub fn device_key() -> (String, [u8; 32]) {
    let k: [u8; 32] = rand::random();
    (STANDARD.encode(k), k)
}

/// A random APNs token (hex of 32 bytes).
pub fn apns_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The real `pushrelay serve` binary as a child process, its stderr (the
/// log) collected; killed on drop.
pub struct RelayProcess {
    pub child: std::process::Child,
    pub port: u16,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

/// The value of the metric series whose line starts with `series` (name
/// and labels, as rendered), 0 if absent. The recorder is shared by every
/// test of the process: compare with `>=`, never `==`.
pub async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// `GET /v1/apps/{APP}` once its `provider` credential health reads
/// `state`, or as it stands after 5 s. A call's pushes write health off the
/// call's path (a test push writes it before answering), so a look right
/// after a call's report may come before it.
pub async fn app_view_with_health(app: &TestApp, provider: &str, state: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let view: serde_json::Value = app.admin(reqwest::Method::GET, &format!("/v1/apps/{APP}")).send().await.unwrap().json().await.unwrap();
        if view[provider]["health"]["state"] == state || std::time::Instant::now() > deadline {
            return view;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl RelayProcess {
    /// Start `pushrelay serve` with `env` (PUSHRELAY_LISTEN is set here),
    /// optionally under a shell `ulimit -n`, and wait until `/healthz` answers.
    pub fn start(env: &HashMap<String, String>, nofile: Option<u32>) -> Result<RelayProcess, String> {
        use std::io::Read;
        let port = free_port();
        let bin = env!("CARGO_BIN_EXE_pushrelay");
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = std::process::Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" serve",), bin]);
                c
            }
            None => {
                let mut c = std::process::Command::new(bin);
                c.arg("serve");
                c
            }
        };
        for (k, v) in env {
            if k.starts_with("PUSHRELAY_") {
                cmd.env(k, v);
            }
        }
        cmd.env("PUSHRELAY_LISTEN", format!("127.0.0.1:{port}")).env("RUST_LOG", "debug,sqlx=warn,hyper=warn,h2=warn,rustls=warn");
        let mut child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().map_err(|e| e.to_string())?;
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited with {status}: {}", log.lock().unwrap()));
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(RelayProcess { child, port, log });
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return Err("did not start listening within 15 s".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new API key with these scopes (and bound app): (id, key).
pub async fn new_key(app: &TestApp, scopes: &[&str], bound_app: Option<&str>) -> (String, String) {
    let mut body = serde_json::json!({"name": format!("key-{}", scopes.join("-")), "scopes": scopes});
    if let Some(a) = bound_app {
        body["app"] = serde_json::json!(a);
    }
    let r = app.admin(reqwest::Method::POST, "/v1/api-keys").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    (v["id"].as_str().unwrap().to_string(), v["key"].as_str().unwrap().to_string())
}

/// A request with an API key as the bearer.
pub fn with_key(app: &TestApp, key: &str, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    app.client.request(m, app.url(path)).bearer_auth(key)
}

/// (method, path) of every operation in `schemas/openapi.yaml`, read from
/// its "  /path:" blocks and the methods under each.
pub fn documented_routes() -> Vec<(String, String)> {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/openapi.yaml")).unwrap();
    let (mut current, mut out) = (String::new(), Vec::new());
    for line in spec.lines() {
        if line.starts_with("  /") && line.trim_end().ends_with(':') {
            current = line.trim().trim_end_matches(':').to_string();
        } else if let Some(m) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')) {
            if ["get", "put", "post", "delete", "patch"].contains(&m) && !current.is_empty() {
                out.push((m.to_string(), current.clone()));
            }
        } else if !line.starts_with(' ') && !line.is_empty() {
            current.clear();
        }
    }
    out
}
