//! The registration steps every dialect shares, in one place: check that
//! the app can push through the device's provider, store the request's
//! registrations for one user (creating the user, holding the device cap,
//! all or nothing), count them and log them (token suffix only).
//!
//! A dialect is its parser (`dialect::*`) plus a thin handler (`http::*`)
//! that authenticates, rate-limits, parses and calls this module.
//!
//! Depends on `domain`, `store`, `telemetry`. Knows nothing of HTTP: its
//! one error type is mapped to statuses in `http::error` (JSON) and
//! `http::uds` (XML).

use crate::domain::{now_ms, AppId, FieldError, Provider, Registration, UserId};
use crate::store::{Store, StoreError};

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Bad input: unknown application, no credentials … (400).
    #[error(transparent)]
    Refused(#[from] FieldError),
    /// A new device past `limits.devices_per_user` (409).
    #[error("the user already has {0} devices")]
    DeviceLimit(u32),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for RegisterError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DeviceLimit(n) => RegisterError::DeviceLimit(n),
            other => RegisterError::Store(other),
        }
    }
}

pub type Result<T, E = RegisterError> = std::result::Result<T, E>;

#[derive(Clone, Debug)]
pub struct Registrar {
    store: Store,
    max_devices: u32,
}

impl Registrar {
    pub fn new(store: Store, max_devices: u32) -> Self {
        Self { store, max_devices }
    }

    /// `Err` unless `app` has `provider` credentials: `unknown_application`
    /// when the app is not known at all, else `no_credentials`.
    pub async fn require_credentials(&self, app: &AppId, provider: Provider) -> Result<()> {
        if self.store.has_credentials(app, provider.into()).await? {
            return Ok(());
        }
        Err(self.missing_credentials(app, provider.as_str()).await?.into())
    }

    /// The refusal for an app that has no `what` credentials.
    pub async fn missing_credentials(&self, app: &AppId, what: &str) -> Result<FieldError> {
        Ok(if self.store.app_exists(app).await? {
            FieldError::new("application", "no_credentials", format!("application {app} has no {what} credentials"))
        } else {
            FieldError::new("application", "unknown_application", format!("application {app} is not known to this relay"))
        })
    }

    /// The first (app, provider) of `candidates` × `providers` that has
    /// credentials; else the refusal for the first candidate.
    pub async fn first_with_credentials(&self, candidates: &[AppId], providers: &[Provider], what: &str) -> Result<(AppId, Provider)> {
        for app in candidates {
            for provider in providers {
                if self.store.has_credentials(app, (*provider).into()).await? {
                    return Ok((app.clone(), *provider));
                }
            }
        }
        let first = candidates.first().expect("at least one candidate app");
        Err(self.missing_credentials(first, what).await?.into())
    }

    /// Store `regs` (all for `user`) in one transaction; count and log them.
    pub async fn store(&self, user: &UserId, regs: &[Registration]) -> Result<u64> {
        let written = self.store.register(user, regs, now_ms(), self.max_devices).await?;
        for reg in regs {
            metrics::counter!(crate::telemetry::REGISTRATIONS, "dialect" => reg.dialect().as_str()).increment(1);
            tracing::info!(
                user = %reg.user, device = %reg.device, dialect = reg.dialect().as_str(), channel = %reg.channel, app = %reg.app,
                token = reg.token.suffix(), "device registered"
            );
        }
        Ok(written)
    }
}
