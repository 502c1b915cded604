//! A database from before tenants migrates into the tenant `default`
//! unchanged (interface.md §8): built here with the migrations that came
//! before, filled as the relay of that time filled it (sealed secrets
//! under the contexts of that time), then opened by this relay.
use crate::helpers::*;
use pushrelay::envelope::MasterKey;
use reqwest::Method;
use serde_json::{json, Value};

const TENANTS_MIGRATION: &str = "20261205000001_tenants.sql";

/// The relay's database at the last migration before tenants.
async fn database_before_tenants(url: &str, dir: &std::path::Path) -> sqlx::AnyPool {
    let old = dir.join("migrations-before-tenants");
    std::fs::create_dir_all(&old).unwrap();
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut names: Vec<String> = std::fs::read_dir(&all).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    for name in names.iter().take_while(|n| n.as_str() < TENANTS_MIGRATION) {
        std::fs::copy(all.join(name), old.join(name)).unwrap();
    }
    sqlx::any::install_default_drivers();
    if url.starts_with("sqlite:") {
        std::fs::File::create(url.trim_start_matches("sqlite://")).unwrap();
    }
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::migrate::Migrator::new(old.as_path()).await.unwrap().run(&pool).await.unwrap();
    pool
}

#[tokio::test]
async fn a_database_from_before_tenants_opens_in_the_default_tenant_unchanged() {
    let (probe, m) = spawn_app_with_mocks().await;
    // The mocks' settings, on a database of our own.
    // (`probe` stays up: its folder holds the mocks' CA file.)
    let mut env = probe.env.clone();
    let dir = tempfile::tempdir().unwrap();
    let url = test_database_url(dir.path()).await;
    let key_file = dir.path().join("old.master.key");
    env.insert("PUSHRELAY_DATABASE_URL".into(), url.clone());
    env.insert("PUSHRELAY_MASTER_KEY_FILE".into(), key_file.display().to_string());
    env.remove("CONFIG_FILE");
    let key = MasterKey::generate();
    key.write_new(&key_file).unwrap();

    let pool = database_before_tenants(&url, dir.path()).await;
    let (device_key, device_key_bytes) = device_key();
    let token = apns_token();
    let hash = pushrelay::http::auth::hash_password("pw-alice").unwrap();
    let old_key = "prk_an-operator-key-from-before-tenants";
    let old_key_hash = hex::encode(pushrelay::http::auth::token_hash(old_key));
    let bound_key = "prk_a-calls-key-bound-to-the-app";
    let bound_key_hash = hex::encode(pushrelay::http::auth::token_hash(bound_key));
    let call_id = uuid::Uuid::new_v4().to_string();
    let report =
        json!({"call_id": call_id, "deliveries": [{"device": "desk", "channel": "APNS", "outcome": "delivered", "attempts": 1}]}).to_string();
    let statements: Vec<(&str, Vec<String>)> = vec![
        ("INSERT INTO apps (app_id, created_at) VALUES ($1, 1)", vec![APP.into()]),
        (
            "INSERT INTO app_credentials (app_id, provider, summary, secret, updated_at) VALUES ($1, 'webex', '{\"webhookSecret\":\"set\"}', $2, 1)",
            vec![APP.into(), key.seal(&format!("app:{APP}:webex"), b"old-webhook-secret")],
        ),
        (
            "INSERT INTO app_credentials (app_id, provider, summary, secret, updated_at) VALUES ($1, 'callback', '{\"url\":\"http://127.0.0.1:9/old\"}', $2, 1)",
            vec![APP.into(), key.seal(&format!("app:{APP}:callback"), b"old-callback-secret-0123")],
        ),
        ("INSERT INTO users (user_id, password_hash, created_at, updated_at) VALUES ('alice', $1, 1, 1)", vec![hash]),
        (
            "INSERT INTO devices (user_id, device_pkid, dialect, channel, token, push_key, app_id, payload_version, created_at, updated_at) \
             VALUES ('alice', 'desk', 'uds', 'APNS', $1, $2, $3, 'V2', 1, 1)",
            vec![token.clone(), key.seal("device:alice/desk", device_key.as_bytes()), APP.into()],
        ),
        (
            "INSERT INTO calls (call_id, user_id, push_id, created_at, ring_ends_at, report, outcomes, app_ids) VALUES ($1, 'alice', 'old-call', $2, $2, $3, ',delivered,', $4)",
            vec![call_id.clone(), pushrelay::domain::now_ms().to_string(), report, format!(",{APP},")],
        ),
        ("INSERT INTO api_keys (id, name, key_hash, scopes, created_at) VALUES ('k-old', 'old', $1, 'admin', 1)", vec![old_key_hash]),
        ("INSERT INTO api_keys (id, name, key_hash, scopes, app_id, created_at) VALUES ('k-bound', 'bound', $1, 'calls,read', $2, 1)", vec![bound_key_hash, APP.into()]),
        ("INSERT INTO console_sessions (id_hash, csrf, who, expires_at) VALUES ('h', 'c', 'admin', 99999999999999)", vec![]),
    ];
    for (sql, params) in statements {
        let mut q = sqlx::query(sql);
        for p in &params {
            // Times are BIGINT: bind numbers as numbers.
            q = match p.parse::<i64>() {
                Ok(n) if p.len() > 9 => q.bind(n),
                _ => q.bind(p.as_str()),
            };
        }
        q.execute(&pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    pool.close().await;

    // This relay opens it: migrations run, every row is the tenant default's.
    let app = spawn_with(dir, env).await;
    let op = |m: Method, path: &str| app.client.request(m, app.url(path)).bearer_auth(old_key);
    let devices: Vec<Value> = op(Method::GET, "/v1/users/alice/devices").send().await.unwrap().json().await.unwrap();
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert_eq!(devices[0]["device"], "desk");
    let r = op(Method::GET, &format!("/v1/calls/{call_id}")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the old report, in the tenant default");
    let tenants: Vec<Value> = op(Method::GET, "/v1/tenants").send().await.unwrap().json().await.unwrap();
    assert_eq!(tenants.len(), 1, "an old key is an operator key: {tenants:?}");
    assert_eq!(tenants[0]["tenant"], "default");
    let summary: Value = op(Method::GET, &format!("/v1/apps/{APP}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(summary["owner"], "shared", "{summary}");
    assert_eq!(summary["callback"]["url"], "http://127.0.0.1:9/old", "the callback moved with its sealed secret: {summary}");
    assert_eq!(summary["webex"]["webhookSecret"], "set");
    // The old app-bound key keeps its reach: the app's devices.
    let r = app.client.get(app.url("/v1/users/alice/devices")).bearer_auth(bound_key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Her old device key still opens (its envelope context is the old one):
    // a call reaches her phone with a JWE under that key.
    assert_eq!(op(Method::PUT, &format!("/v1/apps/{APP}/apns")).json(&m.apns_body()).send().await.unwrap().status(), 200);
    m.apns.clear_requests();
    let r = op(Method::POST, "/v1/calls").json(&json!({"user": "alice", "pushid": "after-migration", "ring_seconds": 5})).send().await.unwrap();
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["deliveries"][0]["outcome"], "delivered", "{report}");
    let sent: Value = serde_json::from_slice(&m.apns.requests()[0].body).unwrap();
    let plain = pushrelay::jwe::decrypt(sent["data"].as_str().unwrap(), &device_key_bytes).expect("the old device key");
    assert!(String::from_utf8_lossy(&plain).contains("after-migration"));
    // alice's Basic password still works, unprefixed (the tenant default).
    let r = app.put_uds("alice", "pw-alice", "desk", uds_xml(&token, "APNS", &device_key, APP)).await;
    assert_eq!(r.status(), 200);
    // The webhook secret sealed before tenants still verifies a webhook.
    let body = crate::spark::fresh("spark/webhook-joined.json");
    let sig = {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"old-webhook-secret").unwrap();
        mac.update(&body);
        hex::encode(mac.finalize().into_bytes())
    };
    assert_eq!(crate::spark::webhook(&app, body, Some(sig)).await.status(), 200);
}
