//! The V2 payload (protocol.md §2): the JSON plaintext of the UDS JWE, and
//! the two envelopes that carry the compact JWE to APNs and FCM.

use crate::domain::CallEvent;

/// The V2 JSON for one call: keys in the order `type`, `pushid`,
/// `displayname`, `displaynumber`, `payloadversion`, `huntpilotdn`,
/// `ringexpiretime`; every value a string; compact; non-ASCII unescaped.
/// `ringexpiretime` is the ring end in epoch milliseconds.
pub fn build(event: &CallEvent) -> Vec<u8> {
    let mut out = String::with_capacity(192 + event.display_name.len() + event.push_id.as_str().len());
    out.push_str(r#"{"type":"incomingcall","pushid":"#);
    push_json_string(&mut out, event.push_id.as_str());
    out.push_str(r#","displayname":"#);
    push_json_string(&mut out, &event.display_name);
    out.push_str(r#","displaynumber":"#);
    push_json_string(&mut out, &event.display_number);
    out.push_str(r#","payloadversion":"V2","huntpilotdn":"#);
    push_json_string(&mut out, &event.hunt_pilot_dn);
    out.push_str(r#","ringexpiretime":""#);
    out.push_str(&event.ring.ends_at_ms.to_string());
    out.push_str(r#""}"#);
    out.into_bytes()
}

/// APNs body for a UDS device: `{"aps":{},"data":"<compact JWE>"}`.
pub fn apns_body(jwe: &str) -> Vec<u8> {
    let mut out = String::with_capacity(jwe.len() + 24);
    out.push_str(r#"{"aps":{},"data":"#);
    push_json_string(&mut out, jwe);
    out.push('}');
    out.into_bytes()
}

/// FCM `message.data` for a UDS device: `{"body":"<compact JWE>"}`.
pub fn fcm_data(jwe: &str) -> serde_json::Value {
    serde_json::json!({ "body": jwe })
}

/// Appends `s` as a JSON string literal (quotes, backslashes and control
/// characters escaped by serde_json; non-ASCII left as UTF-8).
fn push_json_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("serialising a str cannot fail"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CallId, PushId, RingWindow, UserId};

    fn event(name: &str, number: &str, hunt: &str, ends_at_ms: i64) -> CallEvent {
        CallEvent {
            call_id: CallId::new(),
            user: UserId::parse("alice").unwrap(),
            device: None,
            push_id: PushId::parse("3f6c1a52-9d0e-4b8e-a6a1-1c2d3e4f5a6b").unwrap(),
            display_name: name.into(),
            display_number: number.into(),
            hunt_pilot_dn: hunt.into(),
            actor: None,
            ring: RingWindow { starts_at_ms: ends_at_ms - 30_000, ends_at_ms },
        }
    }

    #[test]
    fn protocol_example_is_reproduced_byte_for_byte() {
        let e = event("Alice Example", "+14085551234", "", 1_764_057_600_000);
        let want = r#"{"type":"incomingcall","pushid":"3f6c1a52-9d0e-4b8e-a6a1-1c2d3e4f5a6b","displayname":"Alice Example","displaynumber":"+14085551234","payloadversion":"V2","huntpilotdn":"","ringexpiretime":"1764057600000"}"#;
        assert_eq!(String::from_utf8(build(&e)).unwrap(), want);
    }

    #[test]
    fn ring_expire_time_is_ring_end_in_ms_from_starting_now() {
        let mut e = event("", "", "", 0);
        e.ring = RingWindow::starting_now(1_764_057_600_000, 30);
        let v: serde_json::Value = serde_json::from_slice(&build(&e)).unwrap();
        assert_eq!(v["ringexpiretime"], "1764057630000");
    }

    #[test]
    fn non_ascii_is_unescaped_and_quotes_and_controls_are_escaped() {
        let e = event("Zoë \"Q\" \\ 山田\n\u{1}", "*88", "5000", 1);
        let s = String::from_utf8(build(&e)).unwrap();
        assert!(s.contains(r#""displayname":"Zoë \"Q\" \\ 山田\n\u0001""#), "{s}");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["displayname"], "Zoë \"Q\" \\ 山田\n\u{1}");
        assert_eq!(v["huntpilotdn"], "5000");
    }

    #[test]
    fn every_value_is_a_string_and_keys_come_in_protocol_order() {
        let s = String::from_utf8(build(&event("", "", "", 42))).unwrap();
        let keys = ["type", "pushid", "displayname", "displaynumber", "payloadversion", "huntpilotdn", "ringexpiretime"];
        let pos: Vec<usize> = keys.iter().map(|k| s.find(&format!("\"{k}\":\"")).unwrap()).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{s}");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 7);
        assert!(v.as_object().unwrap().values().all(|x| x.is_string()));
    }

    #[test]
    fn apns_body_and_fcm_data_wrap_the_compact_jwe() {
        let jwe = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..AAAA.BBBB.CCCC";
        assert_eq!(apns_body(jwe), format!(r#"{{"aps":{{}},"data":"{jwe}"}}"#).into_bytes());
        assert_eq!(serde_json::to_string(&fcm_data(jwe)).unwrap(), format!(r#"{{"body":"{jwe}"}}"#));
    }
}
