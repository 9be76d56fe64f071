//! DNS resolution that drops forbidden addresses, so the HTTP client can only ever connect
//! to addresses the policy allows. Checking at connect time (not only when the URL is
//! stored) defeats DNS rebinding: the name is judged by what it resolves to now.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::FetchError;
use super::guard::AddressPolicy;

pub(crate) struct GuardedResolver {
    pub policy: Arc<AddressPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            // The port is filled in by the connector; 0 is a placeholder.
            match resolve_allowed(&policy, name.as_str(), 0).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                // Boxed as itself so `fetch` can find it in the error chain and show the
                // refusal rather than a generic connect error.
                Err(e) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            }
        })
    }
}

/// Resolves `host` and keeps the allowed addresses. Refuses with a message naming the first
/// forbidden address when none is left.
pub(crate) async fn resolve_allowed(
    policy: &AddressPolicy,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, FetchError> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| FetchError::Resolve(format!("could not resolve {host}: {e}")))?
        .collect();
    let mut refused = None;
    let allowed: Vec<SocketAddr> = resolved
        .iter()
        .filter(|addr| match policy.check(addr.ip()) {
            Ok(()) => true,
            Err(reason) => {
                refused.get_or_insert((addr.ip(), reason));
                false
            }
        })
        .copied()
        .collect();
    if !allowed.is_empty() {
        return Ok(allowed);
    }
    match refused {
        Some((ip, reason)) => Err(FetchError::Forbidden(format!(
            "refused: {host} resolves to {ip}, {reason}; {}",
            super::OPERATOR_HINT
        ))),
        None => Err(FetchError::Resolve(format!(
            "could not resolve {host}: no addresses found"
        ))),
    }
}
