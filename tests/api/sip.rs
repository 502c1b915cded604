//! SIP REGISTER push data: MizuTech X-MPUSH (seeds/001), Kazoo User-Agent
//! rules (seeds/004), RFC 8599; push-and-wait with /sip/wake.
use crate::helpers::*;
use pushrelay_mock::apns::ScriptedReply;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn sip_register(app: &TestApp, body: Vec<u8>) -> reqwest::Response {
    app.admin(reqwest::Method::POST, "/sip/register").header("content-type", "message/sip").body(body).send().await.unwrap()
}

fn wake(app: &TestApp, body: Value) -> tokio::task::JoinHandle<(u16, Value, Duration)> {
    let req = app.admin(reqwest::Method::POST, "/sip/wake").json(&body);
    tokio::spawn(async move {
        let started = Instant::now();
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap(), started.elapsed())
    })
}

async fn until<F: Fn() -> bool>(what: &str, f: F) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn mizu_register_then_wake_sends_the_mizu_payload_and_returns_on_re_register() {
    let (app, m) = spawn_app_with_mocks().await;
    app.put_mock_apns(&m, "com.mycompany.myapp", "com.mycompany.myapp").await;
    let r = sip_register(&app, fixture("sip/mizu-register-hex.txt")).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let list = app.devices("1111").await;
    assert_eq!(list[0]["dialect"], "sip");
    assert_eq!(list[0]["channel"], "APNS");

    let w = wake(
        &app,
        json!({"aor": "sip:1111@sip.mydomain.com", "call_id": "abcdef", "from_display": "John Smith", "from_number": "1234", "timeout_ms": 5000}),
    );
    until("the VoIP push", || !m.apns.requests().is_empty()).await;
    let req = &m.apns.requests()[0];
    assert_eq!(req.path, "/3/device/5c0a2f1e9b7d4c3a8e6f1d2b3c4a5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d");
    assert_eq!(req.header("apns-push-type"), Some("voip"));
    assert_eq!(req.header("apns-topic"), Some("com.mycompany.myapp.voip"));
    assert_eq!(req.header("apns-priority"), Some("10"));
    let p: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(p["aps"]["alert"]["title"], "Incoming call from 1234");
    assert_eq!(p["aps"]["alert"]["body"], "Incoming VoIP call from 1234");
    assert_eq!(p["data"]["ntype"], 0);
    assert_eq!(p["data"]["nfromusername"], "John Smith");
    assert_eq!(p["data"]["nfrom"], "1234");
    assert_eq!(p["data"]["ncallid"], "abcdef");
    assert_eq!(p["data"]["ntousr"], "1111");
    assert!(!w.is_finished(), "the wake is held until the device registers");

    // The woken phone registers again: the held request answers at once.
    let again = Instant::now();
    assert_eq!(sip_register(&app, fixture("sip/mizu-register-hex.txt")).await.status(), 200);
    let (status, body, _) = w.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["registered"], true);
    assert_eq!(body["contact"], "sip:1111@192.168.1.101:14501");
    assert!(again.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn the_seed_001_register_with_its_fcm_token_goes_through_fcm_or_is_refused_clearly() {
    let (app, m) = spawn_app_with_mocks().await;
    app.put_mock_apns(&m, "com.mycompany.myapp", "com.mycompany.myapp").await;
    // Without FCM credentials the seed's non-hex token has nowhere to go.
    let r = sip_register(&app, fixture("sip/mizu-register.txt")).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "invalid_token", "{e}");
    assert!(e["message"].as_str().unwrap().contains("X-MPUSH") && e["message"].as_str().unwrap().contains("FCM"), "{e}");
    assert!(!e.to_string().contains("G7SThkASJx2K4Rm1033iR0mIgzI1cLg5xxpST4cjrd"), "no token in errors: {e}");
    let r = app.admin(reqwest::Method::GET, "/v1/users/1111/devices").send().await.unwrap();
    assert_eq!(r.status(), 404, "a refused REGISTER creates no user");

    // With FCM credentials for the app named by the bundle, it goes through Firebase.
    let sa = pushrelay_mock::fixtures::service_account_json(&m.fcm.token_uri(), "mizu-project");
    m.fcm.register_service_account(&sa);
    use base64::Engine;
    let r = app.put_fcm("com.mycompany.myapp", &json!({"serviceAccount": base64::engine::general_purpose::STANDARD.encode(&sa)})).await;
    assert_eq!(r.status(), 200);
    let r = sip_register(&app, fixture("sip/mizu-register.txt")).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let list = app.devices("1111").await;
    assert_eq!((list[0]["channel"].as_str(), list[0]["application"].as_str()), (Some("FCM"), Some("com.mycompany.myapp")), "{list:?}");
    let rep: Value = app.post_call(&json!({"user": "1111", "pushid": "mz-1", "displaynumber": "1234"})).await.json().await.unwrap();
    assert_eq!(rep["deliveries"][0]["outcome"], "delivered", "{rep}");
    let msg: Value = serde_json::from_slice(&m.fcm.sends()[0].body).unwrap();
    assert_eq!(msg["message"]["token"], "c-10-ap_Kt0:G7SThkASJx2K4Rm1033iR0mIgzI1cLg5xxpST4cjrd_cqQquRLkHMi3eY4g");
    // The Mizu payload's fields, as FCM data (strings).
    assert_eq!(msg["message"]["data"]["ntype"], "0");
    assert_eq!(msg["message"]["data"]["ncallid"], "mz-1");
    assert_eq!(msg["message"]["data"]["nfrom"], "1234");
    assert_eq!(msg["message"]["data"]["ntousr"], "1111");
    assert!(m.apns.requests().is_empty(), "nothing went to APNs");
}

#[tokio::test]
async fn a_linphone_register_goes_to_the_sandbox_with_voip_calls_and_remote_cancels() {
    let (app, m) = spawn_app_with_mocks().await;
    app.put_mock_apns(&m, "linphone-ios", "org.example.phone").await;
    let r = sip_register(&app, fixture("sip/linphone-ios.txt")).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["stored"][0]["application"], "linphone-ios", "{v}");
    assert_eq!(v["stored"][0]["channel"], "APNS:dev", "{v}");
    let list = app.devices("1234").await;
    assert_eq!(list[0]["channel"], "APNS:dev");

    let voip = "7f2b0c4d5e6a718293a4b5c6d7e8f901122334455667788990aabbccddeeff00";
    let remote = "0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5061728394a5b6c7d8e9f";
    let rep: Value = app.post_call(&json!({"user": "1234", "pushid": "lp-1", "displaynumber": "1001"})).await.json().await.unwrap();
    assert_eq!(rep["deliveries"][0]["outcome"], "delivered", "{rep}");
    assert!(m.apns.requests().is_empty(), "a development build's token never goes to production APNs");
    let req = &m.apns_dev.requests()[0];
    assert_eq!(req.path, format!("/3/device/{voip}"));
    assert_eq!(req.header("apns-push-type"), Some("voip"));
    assert_eq!(req.header("apns-topic"), Some("org.example.phone.voip"));

    // The cancel is an alert on the remote token, never a VoIP push.
    let c: Value = app
        .admin(reqwest::Method::POST, &format!("/v1/calls/{}/cancel", rep["call_id"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["deliveries"][0]["outcome"], "delivered", "{c}");
    let req = &m.apns_dev.requests()[1];
    assert_eq!(req.path, format!("/3/device/{remote}"));
    assert_eq!(req.header("apns-push-type"), Some("alert"));
    assert_eq!(req.header("apns-topic"), Some("org.example.phone"));
}

#[tokio::test]
async fn a_lone_remote_token_gets_calls_as_alert_pushes() {
    let (app, m) = spawn_app_with_mocks().await;
    app.put_mock_apns(&m, "linphone-ios", "org.example.phone").await;
    let token = apns_token();
    let body = String::from_utf8(fixture("sip/linphone-ios.txt")).unwrap();
    let start = body.find("pn-prid=").unwrap();
    let end = start + body[start..].find(";pn-silent").unwrap();
    let body = body.replace(&body[start..end], &format!("pn-prid={token}:remote;pn-param=ABCD1234.org.example.phone.remote"));
    let r = sip_register(&app, body.into_bytes()).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["stored"][0]["format"], "rfc8599-alert", "{v}");

    let rep: Value = app.post_call(&json!({"user": "1234", "pushid": "lp-2", "displayname": "Bob"})).await.json().await.unwrap();
    assert_eq!(rep["deliveries"][0]["outcome"], "delivered", "{rep}");
    let req = &m.apns_dev.requests()[0];
    assert_eq!(req.path, format!("/3/device/{token}"));
    assert_eq!(req.header("apns-push-type"), Some("alert"));
    assert_eq!(req.header("apns-topic"), Some("org.example.phone"));
    let p: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(p["aps"]["alert"]["body"], "Incoming call from Bob");
    assert_eq!(p["call"]["pushid"], "lp-2");
}

#[tokio::test]
async fn kazoo_user_agent_rule_picks_the_contact_params_and_a_call_wakes_the_device() {
    let (app, m) = spawn_app_with_mocks_and_config("[sip.user_agents.myapp]\nregex = \"^MyApp\"\n").await;
    app.put_mock_apns(&m, "org.myorg.myapp", "org.myorg.myapp").await;
    let r = sip_register(&app, fixture("sip/kazoo-register.txt")).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["stored"][0]["format"], "kazoo");
    assert_eq!(v["stored"][0]["application"], "org.myorg.myapp");
    let rep: Value = app.post_call(&json!({"user": "user", "pushid": "k-1", "displaynumber": "+15551234"})).await.json().await.unwrap();
    assert_eq!(rep["deliveries"][0]["outcome"], "delivered", "{rep}");
    let req = &m.apns.requests()[0];
    assert_eq!(req.path, "/3/device/b4cce23749d42e1b53cfbd1d8521b1f9e16bd6e4961cdada7c8a3a5f5022faeb");
    assert_eq!(req.header("apns-topic"), Some("org.myorg.myapp.voip"));
    let p: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(p["call"]["pushid"], "k-1");
    assert_eq!(p["call"]["displaynumber"], "+15551234");
}

#[tokio::test]
async fn without_a_matching_rule_the_kazoo_register_has_no_push_data() {
    let (app, m) = spawn_app_with_mocks_and_config("[sip.user_agents.other]\nregex = \"^OtherApp\"\n").await;
    app.put_mock_apns(&m, "org.myorg.myapp", "org.myorg.myapp").await;
    let r = sip_register(&app, fixture("sip/kazoo-register.txt")).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "no_push_data", "{e}");
}

#[tokio::test]
async fn rfc8599_apns_and_fcm_bindings_find_their_apps_and_wake_times_out_with_408() {
    let (app, m) = spawn_app_with_mocks().await;
    app.put_mock_apns(&m, "example-ios", "com.yourcompany.yourexampleapp").await;
    let sa = pushrelay_mock::fixtures::service_account_json(&m.fcm.token_uri(), "example-voip-app");
    m.fcm.register_service_account(&sa);
    use base64::Engine;
    let r = app.put_fcm("example-android", &json!({"serviceAccount": base64::engine::general_purpose::STANDARD.encode(&sa)})).await;
    assert_eq!(r.status(), 200);
    let r = sip_register(&app, fixture("sip/rfc8599-apns.txt")).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["stored"][0]["application"], "example-ios", "{v}");
    assert_eq!(v["stored"][0]["format"], "rfc8599");
    let r = sip_register(&app, fixture("sip/rfc8599-fcm.txt")).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["stored"][0]["application"], "example-android", "{v}");
    assert_eq!(v["stored"][0]["channel"], "FCM");

    // Nobody re-registers: 408 at the timeout, after the push was delivered.
    let (status, body, took) = wake(&app, json!({"aor": "sip:bob@example.com", "call_id": "c-9", "timeout_ms": 800})).await.unwrap();
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["registered"], false);
    assert!(took >= Duration::from_millis(750) && took < Duration::from_secs(3), "{took:?}");
    let send = &m.fcm.sends()[0];
    let msg: Value = serde_json::from_slice(&send.body).unwrap();
    assert_eq!(msg["message"]["token"], "dQw4w9WgXcQ:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx8OLp2TQd6F_mN3tVqX");
    assert_eq!(msg["message"]["data"]["pushid"], "c-9");
}

#[tokio::test]
async fn a_wake_whose_push_fails_for_good_answers_at_once_with_the_report() {
    let (app, m) = spawn_app_with_mocks().await;
    app.put_mock_apns(&m, "com.mycompany.myapp", "com.mycompany.myapp").await;
    assert_eq!(sip_register(&app, fixture("sip/mizu-register-hex.txt")).await.status(), 200);
    m.apns.script_token("5c0a2f1e9b7d4c3a8e6f1d2b3c4a5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d", vec![ScriptedReply::error(410, "Unregistered")]);
    let (status, body, took) = wake(&app, json!({"aor": "sip:1111@sip.mydomain.com", "call_id": "x", "timeout_ms": 10000})).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["registered"], false);
    assert_eq!(body["report"]["deliveries"][0]["outcome"], "token_removed");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn many_concurrent_waits_are_held_and_released_by_their_own_register() {
    let (app, m) = spawn_app_with_mocks().await;
    app.put_mock_apns(&m, "com.mycompany.myapp", "com.mycompany.myapp").await;
    let msg = String::from_utf8(fixture("sip/mizu-register-hex.txt")).unwrap();
    let n = 200;
    for i in 0..n {
        let token = format!("{:064x}", i + 1);
        let body =
            msg.replace("sip:1111@", &format!("sip:u{i}@")).replace("5c0a2f1e9b7d4c3a8e6f1d2b3c4a5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d", &token);
        assert_eq!(sip_register(&app, body.into_bytes()).await.status(), 200);
    }
    let waits: Vec<_> =
        (0..n).map(|i| wake(&app, json!({"aor": format!("sip:u{i}@sip.mydomain.com"), "call_id": format!("c{i}"), "timeout_ms": 15000}))).collect();
    until("every push", || m.apns.requests().len() >= n).await;
    // Re-register every other user: exactly those waits return 200.
    for i in (0..n).step_by(2) {
        let token = format!("{:064x}", i + 1);
        let body =
            msg.replace("sip:1111@", &format!("sip:u{i}@")).replace("5c0a2f1e9b7d4c3a8e6f1d2b3c4a5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d", &token);
        assert_eq!(sip_register(&app, body.into_bytes()).await.status(), 200);
    }
    for (i, w) in waits.into_iter().enumerate() {
        if i % 2 == 0 {
            let (status, body, _) = w.await.unwrap();
            assert_eq!(status, 200, "{i}: {body}");
            assert_eq!(body["registered"], true);
        } else {
            assert!(!w.is_finished(), "wait {i} must still be held");
            w.abort();
        }
    }
}

#[tokio::test]
async fn bad_sip_input_is_400_and_stores_nothing() {
    let (app, m) = spawn_app_with_mocks().await;
    app.put_mock_apns(&m, "com.mycompany.myapp", "com.mycompany.myapp").await;
    for (file, code) in [("sip/no-push-data.txt", "no_push_data"), ("sip/mpush-unknown-provider.txt", "unknown_provider")] {
        let r = sip_register(&app, fixture(file)).await;
        assert_eq!(r.status(), 400, "{file}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"], code, "{file}: {e}");
    }
    let r = sip_register(&app, fixture("sip/malformed.txt")).await;
    assert_eq!(r.status(), 400);
    let r = sip_register(&app, b"INVITE sip:x@y SIP/2.0\r\n\r\n".to_vec()).await;
    assert_eq!(r.status(), 400);
    let r = app.admin(reqwest::Method::POST, "/sip/register").header("content-type", "application/json").body("{}").send().await.unwrap();
    assert_eq!(r.status(), 415);
    let r = sip_register(&app, vec![b'a'; 20 * 1024]).await;
    assert_eq!(r.status(), 413);
    for bad in [
        json!({"aor": "not a uri", "call_id": "x"}),
        json!({"aor": "sip:1111@sip.mydomain.com", "call_id": "x", "timeout_ms": 0}),
        json!({"aor": "sip:1111@sip.mydomain.com"}),
    ] {
        let (status, body, _) = wake(&app, bad.clone()).await.unwrap();
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _, _) = wake(&app, json!({"aor": "sip:nobody@sip.mydomain.com", "call_id": "x"})).await.unwrap();
    assert_eq!(status, 404);
    assert_eq!(app.admin(reqwest::Method::GET, "/v1/users/1111/devices").send().await.unwrap().status(), 404);
}

/// A REGISTER for alice@example.com with these `Contact` lines.
fn register_with(contacts: &[String]) -> Vec<u8> {
    let mut m = String::from(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TLS 198.51.100.7:5061;branch=z9hG4bK9\r\nFrom: <sip:alice@example.com>;tag=9\r\n\
         To: <sip:alice@example.com>\r\nCall-ID: cap@example.com\r\nCSeq: 2 REGISTER\r\n",
    );
    for c in contacts {
        m.push_str(&format!("Contact: {c}\r\n"));
    }
    m.push_str("Content-Length: 0\r\n\r\n");
    m.into_bytes()
}

fn apns_contact(host: u8, token: &str, expires: u32) -> String {
    format!("<sip:alice@198.51.100.{host}:5061;transport=tls;pn-provider=apns;pn-prid={token};pn-param=DEF123GHIJ.{APP}.voip>;expires={expires}")
}

/// A REGISTER that removes one binding and adds two, over the device cap,
/// is refused whole: the binding it named as gone is still there.
#[tokio::test]
async fn a_register_refused_for_the_device_cap_removes_nothing() {
    let (app, m) = spawn_app_with_mocks_and_env("", &[("PUSHRELAY_LIMITS_DEVICES_PER_USER", "2")]).await;
    app.put_mock_apns(&m, APP, APP).await;
    let (t1, t2, t3, t4) = (apns_token(), apns_token(), apns_token(), apns_token());
    let r = sip_register(&app, register_with(&[apns_contact(1, &t1, 600), apns_contact(2, &t2, 600)])).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let before = app.devices("alice").await;
    assert_eq!(before.as_array().unwrap().len(), 2);

    let r = sip_register(&app, register_with(&[apns_contact(1, &t1, 0), apns_contact(3, &t3, 600), apns_contact(4, &t4, 600)])).await;
    assert_eq!(r.status(), 409, "one removed + two new = 3 > 2");
    assert_eq!(app.devices("alice").await, before, "the refused REGISTER removed nothing");

    // The same removal with one new binding fits, and happens.
    let r = sip_register(&app, register_with(&[apns_contact(1, &t1, 0), apns_contact(3, &t3, 600)])).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let tokens: Vec<String> =
        app.devices("alice").await.as_array().unwrap().iter().map(|d| d["token_suffix"].as_str().unwrap().to_string()).collect();
    assert!(tokens.contains(&t3[56..].to_string()) && !tokens.contains(&t1[56..].to_string()), "{tokens:?}");
}

/// Registers bob's FCM phone (RFC 8599) with the app `example-android`.
async fn bobs_android(app: &TestApp, m: &Mocks) {
    let sa = pushrelay_mock::fixtures::service_account_json(&m.fcm.token_uri(), "example-voip-app");
    m.fcm.register_service_account(&sa);
    use base64::Engine;
    let r = app.put_fcm("example-android", &json!({"serviceAccount": base64::engine::general_purpose::STANDARD.encode(&sa)})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(sip_register(app, fixture("sip/rfc8599-fcm.txt")).await.status(), 200);
}

fn sip_cancel(app: &TestApp, body: Value) -> reqwest::RequestBuilder {
    app.admin(reqwest::Method::POST, "/sip/cancel").json(&body)
}

/// The caller hangs up while the phone is being woken: `/sip/cancel` ends
/// the held wake at once and the phone gets the cancel push.
#[tokio::test]
async fn a_cancel_during_a_wake_ends_it_at_once_and_sends_the_cancel_push() {
    let (app, m) = spawn_app_with_mocks().await;
    bobs_android(&app, &m).await;
    let w = wake(&app, json!({"aor": "sip:bob@example.com", "call_id": "hangup-1", "timeout_ms": 20000}));
    until("the call push", || m.fcm.sends().len() == 1).await;
    assert!(!w.is_finished());
    let asked = Instant::now();
    let r = sip_cancel(&app, json!({"aor": "sip:bob@example.com", "call_id": "hangup-1"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["waits_ended_here"], 1);
    let (status, body, _) = w.await.unwrap();
    let took = asked.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["registered"].as_bool(), body["cancelled"].as_bool()), (Some(false), Some(true)), "{body}");
    assert_eq!(body["cancel_report"]["deliveries"][0]["outcome"], "delivered", "{body}");
    let sends = m.fcm.sends();
    assert_eq!(sends.len(), 2, "the call, then the cancel");
    let cancel: Value = serde_json::from_slice(&sends[1].body).unwrap();
    assert_eq!(cancel["message"]["data"]["type"], "cancel");
    assert_eq!(cancel["message"]["data"]["pushid"], "hangup-1");
    println!("CANCEL -> wake released and cancel push delivered in {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");

    // Another call's cancel, or a cancel of an unknown AOR, ends nothing.
    let w = wake(&app, json!({"aor": "sip:bob@example.com", "call_id": "hangup-2", "timeout_ms": 1500}));
    until("the second call push", || m.fcm.sends().len() == 3).await;
    let r = sip_cancel(&app, json!({"aor": "sip:bob@example.com", "call_id": "other-call"})).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["waits_ended_here"], 0);
    let r = sip_cancel(&app, json!({"aor": "sip:nobody@example.com", "call_id": "hangup-2"})).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let (status, _, _) = w.await.unwrap();
    assert_eq!(status, 408, "the wake of hangup-2 ran to its timeout");
    let wakes = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(wakes.contains("pushrelay_wake_seconds_count{outcome=\"cancelled\"}"), "the wake histogram by outcome");
    let console = app.admin(reqwest::Method::GET, "/console").send().await.unwrap().text().await.unwrap();
    assert!(console.contains("SIP wakes on this node"), "the console shows the wakes");
    assert!(console.contains("<td>cancelled</td><td>1</td>") && console.contains("<td>timeout</td><td>1</td>"), "one cancelled, one timed out");
}

#[tokio::test]
async fn bad_cancels_are_refused() {
    let (app, m) = spawn_app_with_mocks().await;
    bobs_android(&app, &m).await;
    for (body, status) in [
        (json!({"aor": "not a uri", "call_id": "c"}), 400),
        (json!({"aor": "sip:bob@example.com"}), 400),
        (json!({"aor": "sip:bob@example.com", "call_id": ""}), 400),
        (json!({"aor": "sip:bob@example.com", "call_id": "c", "extra": 1}), 400),
    ] {
        assert_eq!(sip_cancel(&app, body.clone()).send().await.unwrap().status(), status, "{body}");
    }
    let (_, register_key) = new_key(&app, &["register"], None).await;
    let r = with_key(&app, &register_key, reqwest::Method::POST, "/sip/cancel")
        .json(&json!({"aor": "sip:bob@example.com", "call_id": "c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "scope calls");
    assert_eq!(m.fcm.sends().len(), 0, "nothing was pushed");
}

/// The INVITE's request-URI names the proxy's address, not the domain the
/// phone registered with: the wake still finds bob by his user part.
#[tokio::test]
async fn a_wake_by_the_proxy_address_finds_the_phone_by_its_user_part() {
    let (app, m) = spawn_app_with_mocks().await;
    bobs_android(&app, &m).await;
    let w = wake(&app, json!({"aor": "sip:bob@192.0.2.10:5060", "call_id": "by-ip", "timeout_ms": 5000}));
    until("the push", || m.fcm.sends().len() == 1).await;
    // The phone re-registers under its domain: the wait keyed by that AOR is released.
    assert_eq!(sip_register(&app, fixture("sip/rfc8599-fcm.txt")).await.status(), 200);
    let (status, body, _) = w.await.unwrap();
    assert_eq!((status, body["registered"].as_bool()), (200, Some(true)), "{body}");
}
