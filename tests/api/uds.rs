use crate::helpers::*;

async fn registered_app() -> TestApp {
    let app = spawn_app().await;
    app.with_app_and_user().await;
    app
}

#[tokio::test]
async fn uds_put_registers_an_apns_dev_device_and_the_list_hides_secrets() {
    let app = registered_app().await;
    let r = app.put_uds("alice", "pw-alice", "dev-1", fixture("uds/apns-dev.xml")).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/xml"));
    assert_eq!(r.text().await.unwrap(), "<success><rowsUpdated>1</rowsUpdated></success>");
    let list = app.devices("alice").await;
    let d = &list[0];
    assert_eq!(d["device"], "dev-1");
    assert_eq!(d["channel"], "APNS:dev");
    assert_eq!(d["application"], APP);
    assert_eq!(d["dialect"], "uds");
    assert_eq!(d["token_suffix"], "9a0b1c2d");
    assert!(d["updated_at"].as_str().unwrap().ends_with('Z'));
    let text = list.to_string();
    assert!(!text.contains(KEY_B64) && !text.contains(APNS_TOKEN), "{text}");
}

#[tokio::test]
async fn uds_put_replaces_the_registration_of_the_same_device() {
    let app = registered_app().await;
    assert_eq!(app.put_uds("alice", "pw-alice", "dev-1", fixture("uds/apns-dev.xml")).await.status(), 200);
    assert_eq!(app.put_uds("alice", "pw-alice", "dev-1", fixture("uds/fcm.xml")).await.status(), 200);
    let list = app.devices("alice").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["channel"], "FCM");
}

#[tokio::test]
async fn seed_003_sample_with_comments_and_extra_elements_is_accepted() {
    let app = registered_app().await;
    for (dev, file) in [("s1", "uds/seed-003-sample.xml"), ("s2", "uds/extra-elements.xml"), ("s3", "uds/apns-prod.xml")] {
        let r = app.put_uds("alice", "pw-alice", dev, fixture(file)).await;
        assert_eq!(r.status(), 200, "{file}: {}", r.text().await.unwrap());
    }
    // The first two samples carry the same token: one phone, so the later
    // registration (s2) replaces the earlier one and a call rings it once.
    let list = app.devices("alice").await;
    let mut ids: Vec<&str> = list.as_array().unwrap().iter().map(|d| d["device"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, vec!["s2", "s3"], "{list}");
}

/// Each bad document: 400 (or 413) with an XML error naming the field, and
/// the device registered before is unchanged.
#[tokio::test]
async fn bad_uds_documents_are_refused_and_nothing_changes() {
    let app = registered_app().await;
    assert_eq!(app.put_uds("alice", "pw-alice", "dev-1", fixture("uds/apns-dev.xml")).await.status(), 200);
    let before = app.devices("alice").await;
    let cases: &[(&str, &str, &str)] = &[
        ("uds/key-31-bytes.xml", "invalid_key", "key"),
        ("uds/key-not-base64.xml", "invalid_key", "key"),
        ("uds/bad-channel.xml", "invalid_channel", "pushChannelType"),
        ("uds/bad-algorithm.xml", "invalid_algorithm", "algorithm"),
        ("uds/bad-payload-version.xml", "invalid_payload_version", "payloadVersion"),
        ("uds/missing-token.xml", "missing_field", "pushNotifyToken"),
        ("uds/duplicate-key.xml", "duplicate_field", "key"),
        ("uds/doctype-xxe.xml", "dtd_forbidden", ""),
        ("uds/billion-laughs.xml", "dtd_forbidden", ""),
        ("uds/malformed.xml", "malformed_xml", ""),
        ("uds/wrong-root.xml", "wrong_root", ""),
    ];
    for (file, code, field) in cases {
        let r = app.put_uds("alice", "pw-alice", "dev-1", fixture(file)).await;
        assert_eq!(r.status(), 400, "{file}");
        let body = r.text().await.unwrap();
        assert!(body.contains(&format!("<code>{code}</code>")), "{file}: {body}");
        if field.is_empty() {
            assert!(body.contains("<field/>") || body.contains("<field></field>"), "{file}: {body}");
        } else {
            assert!(body.contains(&format!("<field>{field}</field>")), "{file}: {body}");
        }
        assert!(!body.contains(KEY_B64), "{file}: the key is never echoed");
    }
    assert_eq!(app.devices("alice").await, before, "stored device unchanged");
}

#[tokio::test]
async fn unknown_application_and_missing_channel_credentials_are_refused() {
    let app = spawn_app().await;
    assert_eq!(app.put_user("alice", "pw-alice").await.status(), 201);
    assert_eq!(app.put_apns(APP, &apns_token_body(&p8_pem())).await.status(), 200);
    let r = app.put_uds("alice", "pw-alice", "d", uds_xml(APNS_TOKEN, "APNS", KEY_B64, "com.example.Unknown")).await;
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(body.contains("<code>unknown_application</code>") && body.contains("<field>application</field>"), "{body}");
    // The app has APNs but no FCM credentials.
    let r = app.put_uds("alice", "pw-alice", "d", uds_xml("fcm-token-abc:APA91b", "FCM", KEY_B64, APP)).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("<code>no_credentials</code>"));
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn oversize_uds_body_is_413_in_xml() {
    let app = registered_app().await;
    let filler = "<pad>".to_string() + &"x".repeat(20 * 1024) + "</pad>";
    let body = uds_xml(APNS_TOKEN, "APNS", KEY_B64, APP).replace("</token>", &format!("{filler}</token>"));
    let r = app.put_uds("alice", "pw-alice", "d", body).await;
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("<code>too_large</code>"));
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn uds_needs_basic_auth_of_the_path_user() {
    let app = registered_app().await;
    assert_eq!(app.put_user("bob", "pw-bob").await.status(), 201);
    let xml = uds_xml(APNS_TOKEN, "APNS", KEY_B64, APP);
    // Wrong password, other user's credentials, no credentials.
    for r in [
        app.put_uds("alice", "wrong", "d", xml.clone()).await,
        app.client
            .put(app.url("/cucm-uds/user/alice/device/d/devicetoken"))
            .basic_auth("bob", Some("pw-bob"))
            .body(xml.clone())
            .send()
            .await
            .unwrap(),
        app.client.put(app.url("/cucm-uds/user/alice/device/d/devicetoken")).body(xml.clone()).send().await.unwrap(),
    ] {
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"pushrelay\"");
        assert!(r.text().await.unwrap().contains("<code>unauthorized</code>"));
    }
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn uds_delete_removes_the_device_then_404s() {
    let app = registered_app().await;
    assert_eq!(app.put_uds("alice", "pw-alice", "dev-1", fixture("uds/apns-dev.xml")).await.status(), 200);
    assert_eq!(app.delete_uds("alice", "wrong", "dev-1").await.status(), 401);
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 1);
    assert_eq!(app.delete_uds("alice", "pw-alice", "dev-1").await.status(), 204);
    let r = app.delete_uds("alice", "pw-alice", "dev-1").await;
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("<code>not_found</code>"));
}

#[tokio::test]
async fn registrations_survive_a_restart() {
    let app = registered_app().await;
    assert_eq!(app.put_uds("alice", "pw-alice", "dev-1", fixture("uds/apns-dev.xml")).await.status(), 200);
    assert_eq!(app.put_uds("alice", "pw-alice", "dev-2", fixture("uds/fcm.xml")).await.status(), 200);
    let before = app.devices("alice").await;
    let app = app.restart().await;
    assert_eq!(app.devices("alice").await, before);
    // Credentials and the user's password survived too.
    assert_eq!(app.put_uds("alice", "pw-alice", "dev-3", fixture("uds/apns-prod.xml")).await.status(), 200);
}

#[tokio::test]
async fn the_database_file_holds_no_plaintext_secret() {
    let app = registered_app().await;
    assert_eq!(app.put_uds("alice", "pw-alice", "dev-1", uds_xml(APNS_TOKEN, "APNS", KEY_B64, APP)).await.status(), 200);
    let columns = app.raw_secret_columns().await;
    assert!(columns.contains("v2.") && columns.contains("$argon2id$"), "sanity: envelopes and hashes are there");
    for secret in [KEY_B64, "PRIVATE KEY", "pw-alice", ADMIN_TOKEN] {
        assert!(!columns.contains(secret), "{secret} stored in plaintext");
    }
    let mut app = app;
    app.stop().await;
    if on_postgres() {
        return;
    }
    // SQLite: the whole file (and its WAL) holds no plaintext secret either.
    let mut raw = Vec::new();
    for f in ["relay.db", "relay.db-wal"] {
        if let Ok(b) = std::fs::read(app.dir.path().join(f)) {
            raw.extend(b);
        }
    }
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains(APNS_TOKEN), "sanity: the token itself is stored");
    assert!(!text.contains(KEY_B64), "device key in plaintext");
    assert!(!text.contains("PRIVATE KEY"), "provider key in plaintext");
    assert!(!text.contains("pw-alice"), "password in plaintext");
}
