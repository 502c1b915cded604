//! Webex webhook verification secret (seeds/000). Push providers' own
//! credentials live with their provider (`provider::<name>::credentials`).

use crate::secret::Secret;
use std::fmt;

/// Webex webhook verification secret of one app (seeds/000).
#[derive(Clone)]
pub struct WebexCredentials {
    pub webhook_secret: Secret<String>,
}

impl fmt::Debug for WebexCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebexCredentials(<redacted>)")
    }
}
