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

use crate::domain::{now_ms, AllowedHosts, AppId, Channel, Dialect, FieldError, Provider, Reach, Registration, Scope, UserId};
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
    /// The request names an app other than the one its key is bound to (403).
    #[error("this key is bound to the app {0} and may not name another app")]
    WrongApp(AppId),
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
    webpush_hosts: AllowedHosts,
}

impl Registrar {
    pub fn new(store: Store, max_devices: u32, webpush_hosts: AllowedHosts) -> Self {
        Self { store, max_devices, webpush_hosts }
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

    /// The app push data names by `name` (an APNs bundle id or FCM project
    /// id in its credentials, or the app id itself) among the apps the
    /// scope's tenant sees with `provider` credentials; 400
    /// `unknown_application` when none, 403 `WrongApp` when the scope is
    /// narrowed to another app.
    pub async fn app_named(&self, scope: &Scope, provider: Provider, name: &str) -> Result<AppId> {
        let reach = Reach::of(&Scope::tenant(scope.tenant_id().clone()));
        let mut found = self.store.app_for_lookup(&reach, provider, name).await?;
        if found.is_none() {
            if let Ok(app) = AppId::parse(name) {
                if self.store.has_credentials(&reach, &app, provider.into()).await? {
                    found = Some(app);
                }
            }
        }
        let app = found.ok_or_else(|| {
            FieldError::new("application", "unknown_application", format!("no application has {} credentials for {name}", provider.as_str()))
        })?;
        bound_to(scope, app)
    }

    /// The app whose APNs bundle id (or whose id) is `bundle` and that has
    /// `provider` credentials (X-MPUSH: an FCM token of an iOS app), if any.
    pub async fn app_of_bundle_with(&self, scope: &Scope, bundle: &str, provider: Provider) -> Result<Option<AppId>> {
        let reach = Reach::of(&Scope::tenant(scope.tenant_id().clone()));
        let mut candidates = Vec::new();
        if let Some(app) = self.store.app_for_lookup(&reach, Provider::Apns, bundle).await? {
            candidates.push(app);
        }
        if let Ok(app) = AppId::parse(bundle) {
            candidates.push(app);
        }
        for app in candidates {
            if self.store.has_credentials(&reach, &app, provider.into()).await? {
                return Ok(Some(bound_to(scope, app)?));
            }
        }
        Ok(None)
    }

    /// The app of push data that names none (RFC 8599 Web Push): the key's
    /// own app, else the one app the tenant sees with `provider`
    /// credentials; 400 when there is none or more than one.
    pub async fn only_app_with(&self, scope: &Scope, provider: Provider) -> Result<AppId> {
        if let Some(app) = scope.app() {
            self.require_credentials(scope, app, provider).await?;
            return Ok(app.clone());
        }
        let apps = self.store.apps_with_credentials(&Reach::of(scope), provider.into()).await?;
        match apps.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(FieldError::new("application", "unknown_application", format!("no application has {} credentials", provider.as_str())).into()),
            _ => Err(FieldError::new(
                "application",
                "ambiguous_application",
                format!("{} applications have {} credentials: use an API key bound to the app", apps.len(), provider.as_str()),
            )
            .into()),
        }
    }

    /// Store `regs` (all for `user`) in the scope's tenant and remove the
    /// SIP bindings `removals` names, in one transaction; count and log them.
    /// A Web Push endpoint must name an allowed push service
    /// (`webpush.allowed_hosts`): 400 `invalid_subscription` otherwise,
    /// and nothing is stored.
    pub async fn store(&self, scope: &Scope, user: &UserId, regs: &[Registration], removals: &SipRemovals) -> Result<RegisterOutcome> {
        for reg in regs.iter().filter(|r| r.channel == Channel::WebPush) {
            let field = if reg.dialect() == Dialect::Sip { "pn-prid" } else { "subscription" };
            self.webpush_hosts.admit(reg.token.as_str(), field)?;
        }
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

/// `app`, unless the scope is narrowed to another app (403).
fn bound_to(scope: &Scope, app: AppId) -> Result<AppId> {
    match scope.app() {
        Some(bound) if *bound != app => Err(RegisterError::WrongApp(bound.clone())),
        _ => Ok(app),
    }
}

/// The refusal for an app the scope does not see (missing, or another
/// tenant's: the same words).
fn unknown_application(app: &AppId) -> FieldError {
    FieldError::new("application", "unknown_application", format!("application {app} is not known to this relay"))
}
