//! Tenants (interface.md §8): one customer of the operator, and the scope a
//! request acts in.
//!
//! Every store method that reads or changes users, devices, calls, claims,
//! callbacks, sessions or apps takes a `Scope` (one tenant, optionally
//! narrowed to one app) or, for the operator's cross-tenant views, a
//! `Reach`. A handler cannot forget the tenant: there is no store method
//! without one.

use super::{AppId, FieldError};
use std::fmt;
use std::sync::Arc;

/// A tenant id: `[a-z0-9][a-z0-9-]{0,62}`. Cheap to clone (it rides along
/// with every device of a call).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// The tenant every route without a tenant prefix belongs to; a
    /// deployment from before tenants lives in it.
    pub const DEFAULT: &'static str = "default";

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let bad = || FieldError::new("tenant", "invalid_tenant", "tenant must match [a-z0-9][a-z0-9-]{0,62}");
        let mut chars = raw.chars();
        match chars.next() {
            Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit() => {}
            _ => return Err(bad()),
        }
        if raw.len() > 63 || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return Err(bad());
        }
        Ok(Self(Arc::from(raw)))
    }

    pub fn default_tenant() -> Self {
        static DEFAULT: std::sync::OnceLock<TenantId> = std::sync::OnceLock::new();
        DEFAULT.get_or_init(|| TenantId(Arc::from(Self::DEFAULT))).clone()
    }

    pub fn is_default(&self) -> bool {
        &*self.0 == Self::DEFAULT
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({:?})", &*self.0)
    }
}

impl serde::Serialize for TenantId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// What one request may see and change: one tenant, and inside it every
/// app or only the app its key is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    tenant: TenantId,
    app: Option<AppId>,
}

impl Scope {
    /// All of one tenant.
    pub fn tenant(tenant: TenantId) -> Self {
        Self { tenant, app: None }
    }

    /// The default tenant, whole (single-customer deployments, tools).
    pub fn default_tenant() -> Self {
        Self::tenant(TenantId::default_tenant())
    }

    /// Narrowed to one app (an app-bound key); `None` keeps the scope.
    pub fn narrowed_to(mut self, app: Option<AppId>) -> Self {
        if app.is_some() {
            self.app = app;
        }
        self
    }

    pub fn tenant_id(&self) -> &TenantId {
        &self.tenant
    }

    /// The one app this scope is narrowed to, if any.
    pub fn app(&self) -> Option<&AppId> {
        self.app.as_ref()
    }

    /// Whether a device or object of `app` is inside this scope.
    pub fn admits(&self, app: &AppId) -> bool {
        self.app.as_ref().is_none_or(|bound| bound == app)
    }
}

/// How far a credential reaches where objects are not a tenant's alone:
/// apps (shared or owned), API keys, the console. Every tenant (an
/// operator) or one, optionally narrowed to one app. Only an operator
/// credential makes one with `every_tenant`.
/// - apps: an operator reach sees and administers every app and creates
///   shared ones; a tenant reach sees shared apps and its own, and creates
///   apps it owns;
/// - listings (console, stale devices): every tenant, or one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    tenant: Option<TenantId>,
    app: Option<AppId>,
}

impl Reach {
    /// Every tenant (operator credentials only).
    pub fn every_tenant() -> Self {
        Self { tenant: None, app: None }
    }

    /// What a scope sees.
    pub fn of(scope: &Scope) -> Self {
        Self { tenant: Some(scope.tenant.clone()), app: scope.app.clone() }
    }

    /// Narrowed to one tenant (an operator's filter).
    pub fn only_tenant(mut self, tenant: Option<TenantId>) -> Self {
        if tenant.is_some() {
            self.tenant = tenant;
        }
        self
    }

    pub fn narrowed_to(mut self, app: Option<AppId>) -> Self {
        if app.is_some() {
            self.app = app;
        }
        self
    }

    /// `None`: every tenant.
    pub fn tenant(&self) -> Option<&TenantId> {
        self.tenant.as_ref()
    }

    pub fn app(&self) -> Option<&AppId> {
        self.app.as_ref()
    }

    /// Whether objects of `app` are inside this reach (its app binding).
    pub fn admits(&self, app: &AppId) -> bool {
        self.app.as_ref().is_none_or(|bound| bound == app)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_follow_the_contract() {
        for ok in ["default", "acme", "a", "0", "acme-eu-1", &"a".repeat(63)] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-acme", "Acme", "acme_eu", "acme.eu", "acme/x", &"a".repeat(64), "ä"] {
            assert_eq!(TenantId::parse(bad).unwrap_err().code, "invalid_tenant", "{bad}");
        }
        assert!(TenantId::default_tenant().is_default());
    }

    #[test]
    fn a_scope_narrowed_to_an_app_admits_only_that_app() {
        let a = AppId::parse("com.a").unwrap();
        let b = AppId::parse("com.b").unwrap();
        let whole = Scope::default_tenant();
        assert!(whole.admits(&a) && whole.admits(&b));
        let narrow = whole.clone().narrowed_to(Some(a.clone()));
        assert!(narrow.admits(&a) && !narrow.admits(&b));
        assert_eq!(narrow.clone().narrowed_to(None), narrow, "None keeps the binding");
    }
}
