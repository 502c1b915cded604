//! Findings 7 and 9: no cap on devices per user, app-bound keys that were
//! only a default, SIP per-contact expiry ignored.
use super::spawn_with_env;
use crate::helpers::*;
use serde_json::{json, Value};

#[tokio::test]
async fn a_new_device_past_the_cap_is_409_and_an_existing_one_re_registers() {
    let (app, m) = spawn_with_env(&[("PUSHRELAY_LIMITS_DEVICES_PER_USER", "2")]).await;
    app.with_mock_credentials(&m).await;
    let (k, _) = device_key();
    for d in ["one", "two"] {
        assert_eq!(app.put_uds("alice", "pw-alice", d, uds_xml(&apns_token(), "APNS", &k, APP)).await.status(), 200);
    }
    let r = app.put_uds("alice", "pw-alice", "three", uds_xml(&apns_token(), "APNS", &k, APP)).await;
    assert_eq!(r.status(), 409);
    let body = r.text().await.unwrap();
    assert!(body.starts_with("<error><code>device_limit</code>"), "{body}");
    assert!(body.contains('2'), "names the limit: {body}");
    assert_eq!(app.put_uds("alice", "pw-alice", "two", uds_xml(&apns_token(), "APNS", &k, APP)).await.status(), 200, "re-registering works");
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 2);
    // Other dialects hit the same cap, in JSON.
    let r = app
        .admin(reqwest::Method::POST, &format!("/register?app={APP}"))
        .json(&json!({"personId": "alice", "voipToken": apns_token()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "device_limit");
    // A call fans out to at most the cap.
    let report: Value = app.post_call(&json!({"user": "alice", "pushid": "p"})).await.json().await.unwrap();
    assert_eq!(report["deliveries"].as_array().unwrap().len(), 2);
}

async fn bound_key(app: &TestApp, scopes: &[&str], bound: &str) -> String {
    let r = app.admin(reqwest::Method::POST, "/v1/api-keys").json(&json!({"name": "bound", "scopes": scopes, "app": bound})).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_key_bound_to_an_app_may_not_name_another_app() {
    let (app, m) = spawn_with_env(&[]).await;
    app.with_mock_credentials(&m).await;
    app.put_mock_apns(&m, "com.example.Other", "com.example.Other").await;
    let key = bound_key(&app, &["register", "calls"], APP).await;
    let post = |path: String, body: Value| app.client.post(app.url(&path)).bearer_auth(&key).json(&body).send();
    // Spark: ?app= naming another app.
    let r = post("/register?app=com.example.Other".into(), json!({"personId": "p1", "voipToken": apns_token()})).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "wrong_app");
    assert_eq!(post(format!("/register?app={APP}"), json!({"personId": "p1", "voipToken": apns_token()})).await.unwrap().status(), 200);
    // Acrobits: a reported app id of another app.
    let tok = "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY=";
    let r = post("/acrobits/token".into(), json!({"username": "p2", "selector": "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14", "token_calls": tok, "appid_calls": "com.example.Other"})).await.unwrap();
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());
    // SIP: X-MPUSH for another app's bundle.
    let sip = String::from_utf8(fixture("sip/mizu-register-hex.txt")).unwrap().replace("com.mycompany.myapp", "com.example.Other");
    let r = app.client.post(app.url("/sip/register")).bearer_auth(&key).header("content-type", "message/sip").body(sip).send().await.unwrap();
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());
    assert_eq!(app.admin(reqwest::Method::GET, "/v1/users/p2/devices").send().await.unwrap().status(), 404, "nothing was stored");
    // Calls: the bound key rings only its app's devices of a user.
    let other = bound_key(&app, &["register"], "com.example.Other").await;
    let r = app
        .client
        .post(app.url("/register?app=com.example.Other"))
        .bearer_auth(&other)
        .json(&json!({"personId": "p1", "voipToken": apns_token()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = post("/v1/calls".into(), json!({"user": "p1", "pushid": "x"})).await.unwrap().json().await.unwrap();
    assert_eq!(report["deliveries"].as_array().unwrap().len(), 1, "{report}");
}

fn register_msg(contacts: &[&str], expires_header: Option<u32>) -> String {
    let mut m = String::from("REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.3:5060;branch=z9hG4bK1\r\nFrom: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\n");
    for c in contacts {
        m.push_str(&format!("Contact: {c}\r\n"));
    }
    if let Some(e) = expires_header {
        m.push_str(&format!("Expires: {e}\r\n"));
    }
    m.push_str("Content-Length: 0\r\n\r\n");
    m
}

fn contact(host: &str, token: &str, expires: Option<u32>) -> String {
    let e = expires.map(|e| format!(";expires={e}")).unwrap_or_default();
    format!("<sip:alice@{host};pn-provider=apns;pn-prid={token};pn-param=ABCDE12345.com.example.KitchenSink.voip>{e}")
}

#[tokio::test]
async fn a_contact_with_expires_zero_removes_its_binding_only() {
    let (app, m) = spawn_with_env(&[]).await;
    app.with_mock_credentials(&m).await;
    let (t1, t2) = (apns_token(), apns_token());
    let sip = |body: String| app.admin(reqwest::Method::POST, "/sip/register").header("content-type", "message/sip").body(body).send();
    let r = sip(register_msg(&[&contact("10.0.0.1", &t1, None), &contact("10.0.0.2", &t2, None)], Some(3600))).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 2);
    // The first phone leaves: ;expires=0 on its contact only.
    let r = sip(register_msg(&[&contact("10.0.0.1", &t1, Some(0))], Some(3600))).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["removed"], 1);
    let left = app.devices("alice").await;
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["token_suffix"], t2[t2.len() - 8..]);
    // Expires: 0 applies to the contacts without their own expiry.
    let r = sip(register_msg(&[&contact("10.0.0.1", &t1, Some(600)), &contact("10.0.0.2", &t2, None)], Some(0))).await.unwrap();
    assert_eq!(r.status(), 200);
    let left = app.devices("alice").await;
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["token_suffix"], t1[t1.len() - 8..]);
    // A bad expires value is refused and changes nothing.
    let r = sip(register_msg(&[&format!("{};expires=soon", contact("10.0.0.1", &t1, None))], None)).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 1);
    // Contact: * with Expires: 0 removes them all.
    let r = sip(register_msg(&["*"], Some(0))).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 0);
}
