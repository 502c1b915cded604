//! Acrobits Push Token Reporter (seeds/002): GET query, POST form, POST JSON.
use crate::helpers::*;
use serde_json::{json, Value};

const ACRO_APP: &str = "com.cloudsoftphone.app";
const SELECTOR: &str = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14";
/// `Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY=` as APNs hex (protocol §7).
const CALLS_HEX: &str = "51d97df57d8914fd5b5b04b9811ff019e2c4d6198007608ca6bd448f4c3192b6";

async fn acrobits_app() -> (TestApp, Mocks) {
    let (app, m) = spawn_app_with_mocks().await;
    m.apns.register_bundle(ACRO_APP);
    let mut body = m.apns_body();
    body["bundleId"] = json!(ACRO_APP);
    assert_eq!(app.put_apns(ACRO_APP, &body).await.status(), 200);
    assert_eq!(app.put_user("johndow", "12345678").await.status(), 201);
    (app, m)
}

fn query() -> String {
    String::from_utf8(fixture("acrobits/get-query.txt")).unwrap().trim().to_string()
}

#[tokio::test]
async fn the_seed_get_report_registers_the_pushkit_token_as_apns_hex_and_a_call_wakes_it() {
    let (app, m) = acrobits_app().await;
    let r = app.client.get(app.url(&format!("/acrobits/token?{}", query()))).basic_auth("johndow", Some("12345678")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty(), "200 with no body");
    let list = app.devices("johndow").await;
    assert_eq!(list[0]["dialect"], "acrobits");
    assert_eq!(list[0]["device"], SELECTOR);
    assert_eq!(list[0]["channel"], "APNS");
    assert_eq!(list[0]["token_suffix"], &CALLS_HEX[CALLS_HEX.len() - 8..]);

    let rep: Value =
        app.post_call(&json!({"user": "johndow", "pushid": "c-1", "displayname": "Bob", "displaynumber": "1001"})).await.json().await.unwrap();
    assert_eq!(rep["deliveries"][0]["outcome"], "delivered", "{rep}");
    let req = &m.apns.requests()[0];
    assert_eq!(req.path, format!("/3/device/{CALLS_HEX}"));
    assert_eq!(req.header("apns-push-type"), Some("voip"));
    assert_eq!(req.header("apns-topic"), Some("com.cloudsoftphone.app.voip"));
    let p: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(p["call"]["pushid"], "c-1");
    assert_eq!(p["call"]["displaynumber"], "1001");
}

#[tokio::test]
async fn post_form_and_post_json_work_and_a_null_msgs_token_keeps_the_previous_one() {
    let (app, m) = acrobits_app().await;
    let r = app
        .admin(reqwest::Method::POST, "/acrobits/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(String::from_utf8(fixture("acrobits/post-form.txt")).unwrap().trim_end().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = app
        .admin(reqwest::Method::POST, "/acrobits/token")
        .header("content-type", "application/json")
        .body(fixture("acrobits/post-json.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .admin(reqwest::Method::POST, "/acrobits/token")
        .header("content-type", "application/json")
        .body(fixture("acrobits/null-msgs.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(app.devices("johndow").await.as_array().unwrap().len(), 1);
    // The message token survived the null report: a cancel goes to it as an alert.
    let rep: Value = app.post_call(&json!({"user": "johndow", "pushid": "c-2"})).await.json().await.unwrap();
    let id = rep["call_id"].as_str().unwrap();
    let c: Value = app.admin(reqwest::Method::POST, &format!("/v1/calls/{id}/cancel")).send().await.unwrap().json().await.unwrap();
    assert_eq!(c["deliveries"][0]["outcome"], "delivered", "{c}");
    let reqs = m.apns.requests();
    let alert = reqs.iter().find(|r| r.header("apns-push-type") == Some("alert")).expect("an alert was sent");
    // protocol.md §7: the seed's token_msgs decodes to this text; on an APNs app it is stored as hex.
    assert_eq!(alert.path, format!("/3/device/{}", hex::encode(b"APA91bG9aqWvmnxnYBZWG9hxvtkgzTXSopfiufzmc6tP3Kb")));
    assert_eq!(alert.header("apns-topic"), Some(ACRO_APP));
}

#[tokio::test]
async fn bad_reports_are_400_with_a_message_and_change_nothing() {
    let (app, _m) = acrobits_app().await;
    let cases = [
        String::from_utf8(fixture("acrobits/bad-base64.txt")).unwrap().trim().to_string(),
        "username=johndow&selector=zz".to_string(),
        format!("username=johndow&selector={SELECTOR}"),
        format!("username=johndow&selector={SELECTOR}&token_calls=Udl99X2JFP1bWwS5gR%2FwGeLE1hmAB2CMpr1Ej0wxkrY%3D&appid_calls=com.unknown.app"),
        format!("username=johndow&username=x&selector={SELECTOR}&token_calls=AA&appid_calls={ACRO_APP}"),
    ];
    for q in cases {
        let r = app.admin(reqwest::Method::GET, &format!("/acrobits/token?{q}")).send().await.unwrap();
        assert_eq!(r.status(), 400, "{q}");
        let e: Value = r.json().await.unwrap();
        assert!(e["message"].as_str().unwrap().len() > 5, "{e}");
    }
    let r = app.client.get(app.url(&format!("/acrobits/token?{}", query()))).basic_auth("johndow", Some("wrong")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = app.client.get(app.url(&format!("/acrobits/token?{}", query()))).basic_auth("someoneelse", Some("x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = app.admin(reqwest::Method::POST, "/acrobits/token").header("content-type", "text/plain").body("x").send().await.unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(app.devices("johndow").await.as_array().unwrap().len(), 0);
}
