//! What to push, in the shape a provider carries it. Payload builders
//! (`payload`) make it; providers (`provider::*`) put it on the wire.

use std::collections::BTreeMap;

/// How a provider carries a payload: APNs takes a JSON body with `aps`
/// (VoIP or alert); the others (FCM, Huawei Push Kit, Web Push) a flat map
/// of string fields (FCM and HMS as data messages, Web Push as the JSON
/// object it encrypts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Apns,
    Data,
}

/// One push's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// An APNs VoIP push: the JSON body (topic `<bundle>.voip`, priority 10).
    ApnsVoip { body: Vec<u8> },
    /// An APNs alert (cancels, messages, calls to alert-only devices) to the
    /// device's message token when it has one, topic `<bundle>`.
    ApnsAlert { body: Vec<u8>, collapse_id: Option<String> },
    /// A data message: string fields (a call, a cancel, a message, a test).
    Data { data: BTreeMap<String, String> },
}

impl Content {
    /// The shape this content is in.
    pub fn shape(&self) -> Shape {
        match self {
            Content::ApnsVoip { .. } | Content::ApnsAlert { .. } => Shape::Apns,
            Content::Data { .. } => Shape::Data,
        }
    }
}
