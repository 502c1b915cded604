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

use crate::domain::{now_ms, AppId, FieldError, Provider, Reach, Registration, Scope, UserId};
use crate::store::{RegisterOutcome, SipRemovals, Store, StoreError};

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
            StoreError::UnknownApp(app) => RegisterError::Refused(unknown_application(&app)),
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

    /// `Err` unless `app` is an app the scope sees (its tenant's own or a
    /// shared one) with `provider` credentials: `unknown_application` when
    /// the scope does not see the app at all (another tenant's app is
    /// refused exactly as a missing one), else `no_credentials`.
    pub async fn require_credentials(&self, scope: &Scope, app: &AppId, provider: Provider) -> Result<()> {
        if scope.admits(app) && self.store.has_credentials(&Reach::of(scope), app, provider.into()).await? {
            return Ok(());
        }
        Err(self.missing_credentials(scope, app, provider.as_str()).await?.into())
    }

    /// The refusal for an app that has no `what` credentials the scope may use.
    pub async fn missing_credentials(&self, scope: &Scope, app: &AppId, what: &str) -> Result<FieldError> {
        Ok(if scope.admits(app) && self.store.app_exists(&Reach::of(scope), app).await? {
            FieldError::new("application", "no_credentials", format!("application {app} has no {what} credentials"))
        } else {
            unknown_application(app)
        })
    }

    /// The first (app, provider) of `candidates` × `providers` that the
    /// scope sees with credentials; else the refusal for the first candidate.
    pub async fn first_with_credentials(&self, scope: &Scope, candidates: &[AppId], providers: &[Provider], what: &str) -> Result<(AppId, Provider)> {
        let reach = Reach::of(scope);
        for app in candidates.iter().filter(|a| scope.admits(a)) {
            for provider in providers {
                if self.store.has_credentials(&reach, app, (*provider).into()).await? {
                    return Ok((app.clone(), *provider));
                }
            }
        }
        let first = candidates.first().expect("at least one candidate app");
        Err(self.missing_credentials(scope, first, what).await?.into())
    }

    /// Store `regs` (all for `user`) in the scope's tenant and remove the
    /// SIP bindings `removals` names, in one transaction; count and log them.
    pub async fn store(&self, scope: &Scope, user: &UserId, regs: &[Registration], removals: &SipRemovals) -> Result<RegisterOutcome> {
        let done = self.store.register(scope, user, regs, removals, now_ms(), self.max_devices).await?;
        for reg in regs {
            metrics::counter!(crate::telemetry::REGISTRATIONS, "dialect" => reg.dialect().as_str()).increment(1);
            tracing::info!(
                tenant = %scope.tenant_id(), user = %reg.user, device = %reg.device, dialect = reg.dialect().as_str(), channel = %reg.channel, app = %reg.app,
                token = reg.token.suffix(), "device registered"
            );
        }
        Ok(done)
    }
}

/// The refusal for an app the scope does not see (missing, or another
/// tenant's: the same words).
fn unknown_application(app: &AppId) -> FieldError {
    FieldError::new("application", "unknown_application", format!("application {app} is not known to this relay"))
}
