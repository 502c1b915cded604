//! Finding 8: a missing key file silently became a new key, one unreadable
//! row made a whole user undeliverable, and rotation could lose writes.
use crate::helpers::*;
use serde_json::{json, Value};

/// A relay process that has sealed data (credentials and a device key).
async fn relay_with_sealed_data(env: &std::collections::HashMap<String, String>) {
    let relay = RelayProcess::start(env, None).expect("first start");
    let client = reqwest::Client::new();
    let r = client.put(relay.url(&format!("/v1/apps/{APP}/apns"))).bearer_auth(ADMIN_TOKEN).json(&apns_token_body(&p8_pem())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    drop(relay);
}

fn serve_fails(env: &std::collections::HashMap<String, String>) -> String {
    match RelayProcess::start(env, None) {
        Ok(r) => panic!("the relay started: {}", r.log()),
        Err(e) => e,
    }
}

#[tokio::test]
async fn serve_refuses_to_start_without_its_key_file_or_with_another_key() {
    let dir = tempfile::tempdir().unwrap();
    let env = base_env(dir.path()).await;
    relay_with_sealed_data(&env).await;
    let key_file = std::path::PathBuf::from(&env["PUSHRELAY_MASTER_KEY_FILE"]);
    let original = std::fs::read(&key_file).unwrap();
    // Missing: exits non-zero naming the key, and does not create a new one.
    std::fs::remove_file(&key_file).unwrap();
    let err = serve_fails(&env);
    assert!(err.contains("master_key_file") && err.contains("does not exist"), "{err}");
    assert!(err.contains("exit status: 78"), "a configuration error exits 78: {err}");
    assert!(!key_file.exists(), "no new key was generated over sealed data");
    // Another key: refused too.
    pushrelay::envelope::MasterKey::generate().write_new(&key_file).unwrap();
    let err = serve_fails(&env);
    assert!(err.contains("master_key_file") && err.contains("does not know"), "{err}");
    assert!(err.contains("exit status: 78"), "{err}");
    // The right key: the relay starts and reads its secrets.
    std::fs::write(&key_file, original).unwrap();
    let relay = RelayProcess::start(&env, None).expect("starts with its key");
    let r = reqwest::Client::new().get(relay.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn one_unreadable_device_key_fails_that_device_only() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    for d in ["good", "broken"] {
        let (k, _) = device_key();
        assert_eq!(app.put_uds("alice", "pw-alice", d, uds_xml(&apns_token(), "APNS", &k, APP)).await.status(), 200);
    }
    // The row is damaged on disk (or sealed under a key this node lacks).
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(app.database_url()).await.unwrap();
    sqlx::query("UPDATE devices SET push_key = 'v2.0badc0de.AAAAAAAAAAAAAAAA.AAAA' WHERE device_pkid = 'broken'").execute(&pool).await.unwrap();
    pool.close().await;
    let r = app.post_call(&json!({"user": "alice", "pushid": "p"})).await;
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    let by_device = |d: &str| report["deliveries"].as_array().unwrap().iter().find(|x| x["device"] == d).cloned().unwrap();
    assert_eq!(by_device("good")["outcome"], "delivered", "{report}");
    assert_eq!(by_device("broken")["outcome"], "failed");
    assert_eq!(by_device("broken")["reason"], "unreadable_secret");
}

/// `rotate-master-key` while the relay runs: the running relay follows,
/// registrations made meanwhile are sealed under the new key, and a restart
/// with the new key file works.
#[tokio::test]
async fn rotation_works_while_the_relay_runs() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    let (k, _) = device_key();
    assert_eq!(app.put_uds("alice", "pw-alice", "before", uds_xml(&apns_token(), "APNS", &k, APP)).await.status(), 200);
    let (new_key, _) = app.rotate_master_key();
    let new_id = pushrelay::envelope::MasterKey::load(&new_key).unwrap().unwrap().id().to_string();
    // The running node follows within its upkeep period (10 s at most).
    let (k2, _) = device_key();
    let mut sealed_new = false;
    for _ in 0..60 {
        assert_eq!(app.put_uds("alice", "pw-alice", "after", uds_xml(&apns_token(), "APNS", &k2, APP)).await.status(), 200);
        if sealed_columns(&app).await.iter().all(|l| l.starts_with(&format!("v2.{new_id}."))) {
            sealed_new = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(sealed_new, "writes after the rotation are sealed under the new key");
    let report: Value = app.post_call(&json!({"user": "alice", "pushid": "p1"})).await.json().await.unwrap();
    assert!(report["deliveries"].as_array().unwrap().iter().all(|d| d["outcome"] == "delivered"), "{report}");
    let mut app = app;
    app.env.insert("PUSHRELAY_MASTER_KEY_FILE".into(), new_key.display().to_string());
    let app = app.restart().await;
    let report: Value = app.post_call(&json!({"user": "alice", "pushid": "p2"})).await.json().await.unwrap();
    assert!(report["deliveries"].as_array().unwrap().iter().all(|d| d["outcome"] == "delivered"), "{report}");
}

/// The envelopes of every sealed row (credentials and device keys).
async fn sealed_columns(app: &TestApp) -> Vec<String> {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(app.database_url()).await.unwrap();
    let mut out = Vec::new();
    for q in ["SELECT secret FROM app_credentials", "SELECT push_key FROM devices WHERE push_key IS NOT NULL"] {
        out.extend(sqlx::query(q).fetch_all(&pool).await.unwrap().iter().map(|r| r.get::<String, _>(0)));
    }
    pool.close().await;
    out
}

#[tokio::test]
async fn sqlite_is_durable_by_default() {
    if on_postgres() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let store = pushrelay::store::Store::connect(&url, &pushrelay::store::StoreOptions::default()).await.unwrap();
    assert_eq!(store.sqlite_synchronous().await.unwrap(), Some(2), "PRAGMA synchronous = FULL");
}
