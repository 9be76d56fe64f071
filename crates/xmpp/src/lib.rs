//! The XMPP wire side (placeholder while the crate is built up).

pub mod commands;
