//! Tenants (interface.md §8, issue "Tenants: one relay shared by many
//! customers"). Each test reproduces one finding of the review as a hostile
//! tenant would, over real sockets with the strict mocks, and asserts what
//! that tenant sees now — and that nothing of the other tenant changed.
use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};

pub const APP_A: &str = "com.a.Phone";
pub const APP_B: &str = "com.b.Phone";

/// Two customers on one relay: tenant `a` (SIP domain `a.example`, app
/// `APP_A` it owns) and tenant `b` (`b.example`, `APP_B`), a shared app
/// `APP` (the operator's), and alice of tenant `a` with a UDS phone of
/// `APP_A`.
pub struct TwoTenants {
    pub app: TestApp,
    pub m: Mocks,
    /// alice's phone (tenant a): its APNs token.
    pub alice_token: String,
}

pub async fn tenant(app: &TestApp, id: &str, body: Value) -> reqwest::Response {
    app.put_json(&format!("/v1/tenants/{id}"), &body).await
}

/// An API key of `tenant` (or an operator key with `None`): (id, key).
pub async fn key_of(app: &TestApp, tenant: Option<&str>, scopes: &[&str], bound_app: Option<&str>) -> (String, String) {
    let mut body = json!({"name": "k", "scopes": scopes});
    if let Some(t) = tenant {
        body["tenant"] = json!(t);
    }
    if let Some(a) = bound_app {
        body["app"] = json!(a);
    }
    let r = app.admin(Method::POST, "/v1/api-keys").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    (v["id"].as_str().unwrap().to_string(), v["key"].as_str().unwrap().to_string())
}

/// APNs credentials for `app_id` (bundle = the app id) owned by `tenant`
/// (`None`: a shared app).
pub async fn apns_app(app: &TestApp, m: &Mocks, app_id: &str, tenant: Option<&str>) {
    m.apns.register_bundle(app_id);
    m.apns_dev.register_bundle(app_id);
    let mut body = m.apns_body();
    body["bundleId"] = json!(app_id);
    let q = tenant.map(|t| format!("?tenant={t}")).unwrap_or_default();
    let r = app.put_json(&format!("/v1/apps/{app_id}/apns{q}"), &body).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

impl TwoTenants {
    pub async fn start() -> Self {
        let (app, m) = spawn_app_with_mocks().await;
        assert_eq!(tenant(&app, "a", json!({"sip_domains": ["a.example"]})).await.status(), 201);
        assert_eq!(tenant(&app, "b", json!({"sip_domains": ["B.Example"]})).await.status(), 201);
        apns_app(&app, &m, APP_A, Some("a")).await;
        apns_app(&app, &m, APP_B, Some("b")).await;
        apns_app(&app, &m, APP, None).await;
        let r = app.put_json("/v1/users/alice?tenant=a", &json!({"password": "pw-alice"})).await;
        assert_eq!(r.status(), 201);
        let alice_token = apns_token();
        let r = app
            .client
            .put(app.url("/t/a/cucm-uds/user/alice/device/desk/devicetoken"))
            .basic_auth("alice", Some("pw-alice"))
            .header("content-type", "application/xml")
            .body(uds_xml(&alice_token, "APNS", KEY_B64, APP_A))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        TwoTenants { app, m, alice_token }
    }

    /// alice's devices in tenant a, as the operator sees them.
    pub async fn alice_devices(&self) -> Vec<Value> {
        let r = self.app.admin(Method::GET, "/v1/users/alice/devices?tenant=a").send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Vec<Value>>().await.unwrap()
    }

    /// A call to alice of tenant a (operator): its report.
    pub async fn call_alice(&self, pushid: &str) -> Value {
        let r = self.app.post_call(&json!({"user": "alice", "tenant": "a", "pushid": pushid, "ring_seconds": 5})).await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

/// An Acrobits report of one calls token (`n` picks the device's selector).
fn acrobits_query(user: &str, token: &str, app: &str, n: u32) -> String {
    use base64::Engine;
    let t = base64::engine::general_purpose::STANDARD_NO_PAD.encode(hex::decode(token).unwrap());
    format!("/acrobits/token?username={user}&selector={n:040x}:1&token_calls={}&appid_calls={app}", urlencode(&t))
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Finding 1: a register key of app B took over any user of the relay and
/// filled their device cap; a call then sent the caller's name to B's phones.
#[tokio::test]
async fn another_tenants_register_key_cannot_reach_a_user_or_fill_their_cap() {
    let t = TwoTenants::start().await;
    let (_, kb) = key_of(&t.app, Some("b"), &["register"], Some(APP_B)).await;
    // Nine reports for "alice" with tenant b's key land in tenant b: its own
    // alice, not tenant a's.
    let mut b_tokens = Vec::new();
    for i in 0..9 {
        let token = apns_token();
        let q = acrobits_query("alice", &token, APP_B, i + 1);
        let r = with_key(&t.app, &kb, Method::GET, &q).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        b_tokens.push(token);
    }
    // Naming tenant a's app from tenant b: as unknown as a missing app.
    let r = with_key(&t.app, &kb, Method::GET, &acrobits_query("alice", &apns_token(), APP_A, 99)).send().await.unwrap();
    assert_eq!(r.status(), 403, "a key bound to B names A: wrong_app");
    let (_, kb_unbound) = key_of(&t.app, Some("b"), &["register"], None).await;
    let r = with_key(&t.app, &kb_unbound, Method::GET, &acrobits_query("alice", &apns_token(), APP_A, 99)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "unknown_application", "{e}");
    // Tenant a's alice still has her one phone, and room for more.
    assert_eq!(t.alice_devices().await.len(), 1);
    for i in 0..5 {
        let r = t
            .app
            .client
            .put(t.app.url(&format!("/t/a/cucm-uds/user/alice/device/extra{i}/devicetoken")))
            .basic_auth("alice", Some("pw-alice"))
            .header("content-type", "application/xml")
            .body(uds_xml(&apns_token(), "APNS", KEY_B64, APP_A))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "her own phones are not refused for tenant b's registrations");
    }
    // A call to tenant a's alice rings her phones only: none of b's tokens.
    t.m.apns.clear_requests();
    let report = t.call_alice("call-1").await;
    assert_eq!(report["deliveries"].as_array().unwrap().len(), 6, "{report}");
    let pushed: Vec<String> = t.m.apns.requests().iter().map(|r| r.path.clone()).collect();
    for bt in &b_tokens {
        assert!(!pushed.iter().any(|p| p.ends_with(bt.as_str())), "tenant b's phone was rung for tenant a's call");
    }
    assert!(pushed.iter().any(|p| p.ends_with(&t.alice_token)));
    // And tenant b's alice is a different user, with her own nine devices.
    let r = with_key(&t.app, &key_of(&t.app, Some("b"), &["read"], None).await.1, Method::GET, "/v1/users/alice/devices").send().await.unwrap();
    assert_eq!(r.json::<Vec<Value>>().await.unwrap().len(), 9);
}

const REGISTER_A: &str = "REGISTER sip:a.example SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: <sip:1001@a.example>\r\n\
From: <sip:1001@a.example>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@10.0.0.9\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:1001@10.0.0.9:5060;pn-provider=apns;pn-prid=TOKEN;pn-param=ABCD1234.BUNDLE.voip>;expires=600\r\n\
Expires: 600\r\n\
Content-Length: 0\r\n\r\n";

fn sip_register(domain: &str, bundle: &str, token: &str) -> String {
    REGISTER_A.replace("a.example", domain).replace("BUNDLE", bundle).replace("TOKEN", token)
}

async fn post_sip(app: &TestApp, key: &str, msg: &str) -> reqwest::Response {
    with_key(app, key, Method::POST, "/sip/register").header("content-type", "message/sip").body(msg.to_string()).send().await.unwrap()
}

/// Finding 2: a register key of app B deleted app A's SIP bindings with
/// `Contact: *` or a per-contact `expires=0`.
#[tokio::test]
async fn another_tenants_key_cannot_remove_or_add_sip_bindings_of_an_aor_it_does_not_own() {
    let t = TwoTenants::start().await;
    let (_, ka) = key_of(&t.app, Some("a"), &["register", "read"], None).await;
    let (_, kb) = key_of(&t.app, Some("b"), &["register"], Some(APP_B)).await;
    let token = apns_token();
    let r = post_sip(&t.app, &ka, &sip_register("a.example", APP_A, &token)).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let devices = || async { with_key(&t.app, &ka, Method::GET, "/v1/users/1001/devices").send().await.unwrap().json::<Vec<Value>>().await.unwrap() };
    assert_eq!(devices().await.len(), 1);
    let wildcard = sip_register("A.EXAMPLE", APP_A, &token)
        .replace("Contact: <sip:1001@10.0.0.9:5060;pn-provider=apns;pn-prid=".to_string().as_str(), "Contact: *\r\nX-Old: <");
    let wildcard = wildcard.replace("Expires: 600", "Expires: 0");
    let one = sip_register("a.example", APP_A, &token).replace(";expires=600", ";expires=0");
    for (what, msg) in
        [("Contact: *", wildcard.as_str()), ("expires=0", one.as_str()), ("a new binding", &sip_register("a.example", APP_B, &apns_token()))]
    {
        let r = post_sip(&t.app, &kb, msg).await;
        assert_eq!(r.status(), 403, "{what}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"], "wrong_tenant", "{what}: {e}");
    }
    assert_eq!(devices().await.len(), 1, "tenant a's binding is still there");
    // Tenant a's own key still can.
    assert_eq!(post_sip(&t.app, &ka, &one).await.status(), 200);
    assert_eq!(devices().await.len(), 0);
}

/// Finding 3: keys bound to app B read and acted across every app: devices,
/// apps, stale devices, the console, calls and cancels.
#[tokio::test]
async fn another_tenants_keys_see_nothing_of_tenant_a_and_cancel_nothing() {
    let t = TwoTenants::start().await;
    let report = t.call_alice("call-3").await;
    let call_id = report["call_id"].as_str().unwrap().to_string();
    let (_, kb_read) = key_of(&t.app, Some("b"), &["read"], Some(APP_B)).await;
    let (_, kb_calls) = key_of(&t.app, Some("b"), &["calls", "read"], Some(APP_B)).await;
    // Tenant b's 404 is the missing object's 404, body for body.
    let missing_user = t.app.admin(Method::GET, "/v1/users/nobody/devices?tenant=b").send().await.unwrap().text().await.unwrap();
    let r = with_key(&t.app, &kb_read, Method::GET, "/v1/users/alice/devices").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap().replace("alice", "nobody"), missing_user);
    let r = with_key(&t.app, &kb_read, Method::GET, &format!("/v1/apps/{APP_A}")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let missing_app = with_key(&t.app, &kb_read, Method::GET, "/v1/apps/com.nope").send().await.unwrap().text().await.unwrap();
    assert_eq!(r.text().await.unwrap().replace(APP_A, "com.nope"), missing_app);
    let r = with_key(&t.app, &kb_read, Method::GET, "/v1/devices/stale?days=1").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(!body.contains("alice") && !body.contains(APP_A), "{body}");
    let r = with_key(&t.app, &kb_read, Method::GET, "/console").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(!page.contains(APP_A) && !page.contains("call-3") && !page.contains("alice"), "tenant b's console shows tenant a");
    let r = with_key(&t.app, &kb_calls, Method::GET, &format!("/v1/calls/{call_id}")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    t.m.apns.clear_requests();
    for _ in 0..2 {
        let r = with_key(&t.app, &kb_calls, Method::POST, &format!("/v1/calls/{call_id}/cancel")).send().await.unwrap();
        assert_eq!(r.status(), 404);
    }
    assert!(t.m.apns.requests().is_empty(), "a cancel of another tenant's call sent a push");
    // A tenant key naming tenant a outright: 403 wrong_tenant.
    let r = with_key(&t.app, &kb_read, Method::GET, "/v1/users/alice/devices?tenant=a").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "wrong_tenant");
    // An operator key bound to app B sees, in tenant a, only app B's objects.
    let (_, op_b) = key_of(&t.app, None, &["read", "calls"], Some(APP_B)).await;
    assert_eq!(with_key(&t.app, &op_b, Method::GET, "/v1/users/alice/devices?tenant=a").send().await.unwrap().status(), 404);
    assert_eq!(with_key(&t.app, &op_b, Method::GET, &format!("/v1/apps/{APP_A}")).send().await.unwrap().status(), 404);
    assert_eq!(with_key(&t.app, &op_b, Method::GET, &format!("/v1/calls/{call_id}?tenant=a")).send().await.unwrap().status(), 404);
    assert_eq!(with_key(&t.app, &op_b, Method::POST, &format!("/v1/calls/{call_id}/cancel?tenant=a")).send().await.unwrap().status(), 404);
    assert!(t.m.apns.requests().is_empty());
    // Tenant a's own key sees it all.
    let (_, ka) = key_of(&t.app, Some("a"), &["read"], None).await;
    assert_eq!(with_key(&t.app, &ka, Method::GET, &format!("/v1/calls/{call_id}")).send().await.unwrap().status(), 200);
    assert_eq!(with_key(&t.app, &ka, Method::GET, &format!("/v1/apps/{APP_A}")).send().await.unwrap().status(), 200);
}

fn session_cookie(r: &reqwest::Response) -> String {
    let c = r.headers().get("set-cookie").expect("a session cookie").to_str().unwrap();
    c.split(';').next().unwrap().to_string()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn console_login(app: &TestApp, token: &str) -> String {
    let r = no_redirects()
        .post(app.url("/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", urlencode(token)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    session_cookie(&r)
}

async fn console_with(app: &TestApp, cookie: &str) -> reqwest::StatusCode {
    no_redirects().get(app.url("/console")).header("cookie", cookie).send().await.unwrap().status()
}

/// Finding 4: a console session outlived the key (or admin token) that
/// signed it in, for up to 12 hours.
#[tokio::test]
async fn a_console_session_ends_when_its_key_is_revoked_or_the_admin_token_changes() {
    let app = spawn_app().await;
    let (id, key) = new_key(&app, &["read"], None).await;
    let by_key = console_login(&app, &key).await;
    let by_admin = console_login(&app, ADMIN_TOKEN).await;
    assert_eq!(console_with(&app, &by_key).await, 200);
    assert_eq!(console_with(&app, &by_admin).await, 200);
    assert_eq!(app.admin(Method::DELETE, &format!("/v1/api-keys/{id}")).send().await.unwrap().status(), 204);
    assert_eq!(console_with(&app, &by_key).await, 303, "the revoked key's session still shows the console");
    assert_eq!(console_with(&app, &by_admin).await, 200);
    // A restart with another admin token ends the admin token's sessions.
    let mut app = app;
    app.env.insert("PUSHRELAY_ADMIN_TOKEN".into(), "another-admin-token-0123456789".into());
    let app = app.restart().await;
    assert_eq!(console_with(&app, &by_admin).await, 303, "the old admin token's session still shows the console");
}

/// Finding 5: an "admin" key bound to app B was unbounded: it minted an
/// unbound admin key, pointed app A's callback at itself and changed any
/// user's password.
#[tokio::test]
async fn an_app_bound_admin_key_is_refused_and_a_tenant_admin_stays_in_its_tenant() {
    let t = TwoTenants::start().await;
    let r = t.app.admin(Method::POST, "/v1/api-keys").json(&json!({"name": "x", "scopes": ["admin"], "app": APP_B})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_scopes");
    let (_, kb) = key_of(&t.app, Some("b"), &["admin"], None).await;
    // Its keys are tenant b's keys: never an operator key, never tenant a's.
    let r = with_key(&t.app, &kb, Method::POST, "/v1/api-keys").json(&json!({"name": "mine", "scopes": ["admin"]})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["tenant"], "b");
    let r = with_key(&t.app, &kb, Method::POST, "/v1/api-keys").json(&json!({"name": "x", "scopes": ["admin"], "tenant": "a"})).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = with_key(&t.app, &kb, Method::POST, "/v1/api-keys").json(&json!({"name": "x", "scopes": ["calls"], "app": APP_A})).send().await.unwrap();
    assert_eq!(r.status(), 400, "a key bound to another tenant's app");
    // Tenant a's app: no callback, no credentials, no test push.
    let cb = json!({"url": "https://b.example/steal", "secret": "0123456789abcdef"});
    assert_eq!(with_key(&t.app, &kb, Method::PUT, &format!("/v1/apps/{APP_A}/callback")).json(&cb).send().await.unwrap().status(), 404);
    assert_eq!(with_key(&t.app, &kb, Method::PUT, &format!("/v1/apps/{APP_A}/apns")).json(&t.m.apns_body()).send().await.unwrap().status(), 409);
    assert_eq!(with_key(&t.app, &kb, Method::DELETE, &format!("/v1/apps/{APP_A}/apns")).send().await.unwrap().status(), 404);
    assert_eq!(
        with_key(&t.app, &kb, Method::PUT, &format!("/v1/apps/{APP}/apns")).json(&t.m.apns_body()).send().await.unwrap().status(),
        409,
        "a shared app's credentials are the operator's"
    );
    // Users of tenant a: out of reach (naming a: 403; unprefixed: tenant b's own user).
    let r = with_key(&t.app, &kb, Method::PUT, "/v1/users/alice?tenant=a").json(&json!({"password": "stolen"})).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(with_key(&t.app, &kb, Method::PUT, "/v1/users/alice").json(&json!({"password": "b-alice"})).send().await.unwrap().status(), 201);
    let r = t
        .app
        .client
        .put(t.app.url("/t/a/cucm-uds/user/alice/device/desk/devicetoken"))
        .basic_auth("alice", Some("pw-alice"))
        .header("content-type", "application/xml")
        .body(uds_xml(&t.alice_token, "APNS", KEY_B64, APP_A))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "tenant a's alice keeps her password");
    // Operator-only routes.
    assert_eq!(with_key(&t.app, &kb, Method::PUT, "/v1/tenants/c").json(&json!({})).send().await.unwrap().status(), 403);
    assert_eq!(with_key(&t.app, &kb, Method::DELETE, "/v1/tenants/a").send().await.unwrap().status(), 403);
    assert_eq!(with_key(&t.app, &kb, Method::GET, "/v1/tenants/a").send().await.unwrap().status(), 404);
    assert_eq!(with_key(&t.app, &kb, Method::GET, "/v1/tenants/b").send().await.unwrap().status(), 200);
    // Its own app and its own callback work.
    assert_eq!(with_key(&t.app, &kb, Method::PUT, &format!("/v1/apps/{APP_B}/callback")).json(&cb).send().await.unwrap().status(), 200);
    assert_eq!(t.alice_devices().await.len(), 1);
}

/// Finding 6: the SIP user was the AOR's user part only, so `1001@a.example`
/// and `1001@b.example` were one user across customers.
#[tokio::test]
async fn the_same_sip_user_in_two_tenants_domains_is_two_users() {
    let t = TwoTenants::start().await;
    assert_eq!(tenant(&t.app, "a", json!({"sip_domains": ["a.example"], "limits": {"devices_per_user": 1}})).await.status(), 200);
    let (_, ka) = key_of(&t.app, Some("a"), &["register", "calls", "read"], None).await;
    let (_, kb) = key_of(&t.app, Some("b"), &["register", "calls", "read"], None).await;
    let (ta, tb) = (apns_token(), apns_token());
    assert_eq!(post_sip(&t.app, &ka, &sip_register("a.example", APP_A, &ta)).await.status(), 200);
    for i in 0..3 {
        let tok = if i == 0 { tb.clone() } else { apns_token() };
        let r = post_sip(&t.app, &kb, &sip_register("b.example", APP_B, &tok).replace("10.0.0.9", &format!("10.0.0.{}", 20 + i))).await;
        assert_eq!(r.status(), 200, "tenant b's cap is its own, not tenant a's limit of 1");
    }
    // Tenant a's limit of one device per user holds for its 1001.
    let r = post_sip(&t.app, &ka, &sip_register("a.example", APP_A, &apns_token()).replace("10.0.0.9", "10.0.0.99")).await;
    assert_eq!(r.status(), 409);
    // A call to 1001 of tenant a rings a's phone only.
    t.m.apns.clear_requests();
    let r = with_key(&t.app, &ka, Method::POST, "/v1/calls").json(&json!({"user": "1001", "pushid": "p-6", "ring_seconds": 5})).send().await.unwrap();
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["deliveries"].as_array().unwrap().len(), 1, "{report}");
    let paths: Vec<String> = t.m.apns.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, vec![format!("/3/device/{ta}")]);
    // A wake of tenant b's AOR wakes b's phones, and tenant a's key may not ask.
    let r = with_key(&t.app, &ka, Method::POST, "/sip/wake")
        .json(&json!({"aor": "sip:1001@b.example", "call_id": "w-1", "timeout_ms": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    t.m.apns.clear_requests();
    let r = with_key(&t.app, &kb, Method::POST, "/sip/wake")
        .json(&json!({"aor": "sip:1001@b.example", "call_id": "w-2", "timeout_ms": 300}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 408);
    let paths: Vec<String> = t.m.apns.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert!(!paths.contains(&format!("/3/device/{ta}")));
    assert!(paths.contains(&format!("/3/device/{tb}")));
}

#[tokio::test]
async fn tenants_are_created_listed_and_deleted_with_everything_they_own() {
    let t = TwoTenants::start().await;
    // A domain belongs to one tenant, in any case.
    let r = tenant(&t.app, "c", json!({"sip_domains": ["A.example"]})).await;
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "domain_taken");
    assert_eq!(t.app.admin(Method::GET, "/v1/tenants/c").send().await.unwrap().status(), 404, "a refused PUT stores nothing");
    for bad in [json!({"sip_domains": ["a b"]}), json!({"limits": {"devices_per_user": 0}}), json!({"nope": 1})] {
        assert_eq!(tenant(&t.app, "c", bad).await.status(), 400);
    }
    assert_eq!(tenant(&t.app, "Bad_Id", json!({})).await.status(), 400);
    let list: Vec<Value> = t.app.admin(Method::GET, "/v1/tenants").send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = list.iter().map(|t| t["tenant"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["a", "b", "default"]);
    assert_eq!(list[1]["sip_domains"], json!(["b.example"]), "domains are kept in lower case");
    assert_eq!(t.app.admin(Method::DELETE, "/v1/tenants/default").send().await.unwrap().status(), 409);
    // Deleting a: its users, devices, calls, keys, own apps and domains go;
    // tenant b and the shared app stay.
    let call = t.call_alice("call-del").await;
    let (_, ka) = key_of(&t.app, Some("a"), &["read"], None).await;
    assert_eq!(t.app.admin(Method::DELETE, "/v1/tenants/a").send().await.unwrap().status(), 204);
    assert_eq!(t.app.admin(Method::DELETE, "/v1/tenants/a").send().await.unwrap().status(), 404);
    assert_eq!(with_key(&t.app, &ka, Method::GET, "/v1/apps/com.a.Phone").send().await.unwrap().status(), 401, "its keys are gone");
    assert_eq!(t.app.admin(Method::GET, &format!("/v1/apps/{APP_A}")).send().await.unwrap().status(), 404, "its apps are gone");
    assert_eq!(t.app.admin(Method::GET, &format!("/v1/apps/{APP_B}")).send().await.unwrap().status(), 200);
    assert_eq!(t.app.admin(Method::GET, &format!("/v1/apps/{APP}")).send().await.unwrap().status(), 200);
    assert_eq!(t.app.admin(Method::GET, &format!("/v1/calls/{}?tenant=b", call["call_id"].as_str().unwrap())).send().await.unwrap().status(), 404);
    // Its domain is free again, its app id too.
    assert_eq!(tenant(&t.app, "c", json!({"sip_domains": ["a.example"]})).await.status(), 201);
    apns_app(&t.app, &t.m, APP_A, Some("c")).await;
    assert_eq!(t.app.admin(Method::GET, "/v1/users/alice/devices?tenant=c").send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn shared_apps_serve_every_tenant_and_owned_apps_only_their_own() {
    let t = TwoTenants::start().await;
    let (_, kb) = key_of(&t.app, Some("b"), &["register", "read", "calls"], None).await;
    // A shared app: any tenant's devices may use it, and read its summary.
    let r = with_key(&t.app, &kb, Method::POST, &format!("/register?app={APP}"))
        .json(&json!({"voipToken": apns_token(), "personId": "bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let v: Value = with_key(&t.app, &kb, Method::GET, &format!("/v1/apps/{APP}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["owner"], "shared");
    // Another tenant's app: as if it did not exist.
    let r = with_key(&t.app, &kb, Method::POST, &format!("/register?app={APP_A}"))
        .json(&json!({"voipToken": apns_token(), "personId": "bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let missing = with_key(&t.app, &kb, Method::POST, "/register?app=com.none")
        .json(&json!({"voipToken": apns_token(), "personId": "bob"}))
        .send()
        .await
        .unwrap();
    let (a, b): (Value, Value) = (r.json().await.unwrap(), missing.json().await.unwrap());
    assert_eq!(a["error"], "unknown_application");
    assert_eq!(a["message"].as_str().unwrap().replace(APP_A, "com.none"), b["message"].as_str().unwrap());
    // App ids are global: tenant b cannot take tenant a's id (409), and the
    // operator's PUT without ?tenant= keeps the owner.
    let (_, kb_admin) = key_of(&t.app, Some("b"), &["admin"], None).await;
    let r = with_key(&t.app, &kb_admin, Method::PUT, &format!("/v1/apps/{APP_A}/fcm")).json(&t.m.fcm_body()).send().await.unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "app_taken");
    let v: Value = t.app.admin(Method::GET, &format!("/v1/apps/{APP_A}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["owner"], "a");
    assert!(v.get("fcm").is_none(), "the refused PUT stored nothing");
    // A new app made by tenant b's admin is b's.
    let mut body = t.m.apns_body();
    body["bundleId"] = json!("com.b.Other");
    let r = with_key(&t.app, &kb_admin, Method::PUT, "/v1/apps/com.b.Other/apns").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["owner"], "b");
    assert_eq!(t.app.admin(Method::GET, "/v1/apps/com.b.Other?tenant=a").send().await.unwrap().status(), 404);
}

/// A tenant's callback gets its own devices' lines only, on a shared app too.
#[tokio::test]
async fn a_tenants_callback_carries_only_its_own_devices() {
    let t = TwoTenants::start().await;
    let (_, ka) = key_of(&t.app, Some("a"), &["admin"], None).await;
    let (_, kb) = key_of(&t.app, Some("b"), &["admin"], None).await;
    let (a_url, a_seen, _a) = crate::callbacks::receiver(0, vec![]).await;
    let (b_url, b_seen, _b) = crate::callbacks::receiver(0, vec![]).await;
    for (k, url) in [(&ka, &a_url), (&kb, &b_url)] {
        let r = with_key(&t.app, k, Method::PUT, &format!("/v1/apps/{APP}/callback"))
            .json(&json!({"url": url, "secret": "0123456789abcdef"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    // bob of tenant b and alice of tenant a, both on the shared app.
    let r = with_key(&t.app, &kb, Method::POST, &format!("/register?app={APP}"))
        .json(&json!({"voipToken": apns_token(), "personId": "bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = with_key(&t.app, &ka, Method::POST, &format!("/register?app={APP}"))
        .json(&json!({"voipToken": apns_token(), "personId": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        with_key(&t.app, &kb, Method::POST, "/v1/calls")
            .json(&json!({"user": "bob", "pushid": "cb-b", "ring_seconds": 5}))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        with_key(&t.app, &ka, Method::POST, "/v1/calls")
            .json(&json!({"user": "alice", "pushid": "cb-a", "ring_seconds": 5}))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while (a_seen.lock().unwrap().is_empty() || b_seen.lock().unwrap().is_empty()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let body = |seen: &crate::callbacks::Seen| seen.lock().unwrap().iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect::<Vec<_>>();
    let (a, b) = (body(&a_seen), body(&b_seen));
    assert_eq!((a.len(), b.len()), (1, 1), "one report each: {a:?} {b:?}");
    let (ra, rb): (Value, Value) = (serde_json::from_str(&a[0]).unwrap(), serde_json::from_str(&b[0]).unwrap());
    assert_ne!(ra["call_id"], rb["call_id"]);
    assert_eq!(ra["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(rb["deliveries"].as_array().unwrap().len(), 1);
}

/// A tenant's `calls_per_second` applies to its keys; an AOR in a domain no
/// tenant claims is `default`'s, out of a tenant key's reach.
#[tokio::test]
async fn a_tenants_own_limits_and_unclaimed_domains() {
    let t = TwoTenants::start().await;
    assert_eq!(tenant(&t.app, "a", json!({"sip_domains": ["a.example"], "limits": {"calls_per_second": 1}})).await.status(), 200);
    let (_, ka) = key_of(&t.app, Some("a"), &["calls", "register"], None).await;
    let (_, kb) = key_of(&t.app, Some("b"), &["calls"], None).await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let r = with_key(&t.app, &ka, Method::POST, "/v1/calls").json(&json!({"user": "nobody", "pushid": format!("r{i}")})).send().await.unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, vec![404, 404, 429, 429], "a burst of two seconds of tenant a's 1 call/s, then 429");
    for i in 0..4 {
        let r = with_key(&t.app, &kb, Method::POST, "/v1/calls").json(&json!({"user": "nobody", "pushid": format!("r{i}")})).send().await.unwrap();
        assert_eq!(r.status(), 404, "tenant b keeps the global rate");
    }
    // c.example is nobody's: the tenant default's. Tenant a's key may not register there.
    let r = post_sip(&t.app, &ka, &sip_register("c.example", APP_A, &apns_token())).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "wrong_tenant");
    // The operator may (the shared app is visible in default).
    assert_eq!(
        t.app
            .admin(Method::POST, "/sip/register")
            .header("content-type", "message/sip")
            .body(sip_register("c.example", APP, &apns_token()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
