//! One module per scenario.

pub(crate) mod calls;
pub(crate) mod jwe;
pub(crate) mod sip_wake;
pub(crate) mod soak;
pub(crate) mod store_ops;
pub(crate) mod sygnal;
pub(crate) mod uds;
