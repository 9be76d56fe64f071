//! Replies to delivered mail. Every notification mailed to a user carries a Reply-To of its
//! own, `reply+<token>@<mail_domain>`: 128 random bits, stored only as a hash, bound to the
//! notification, the user and the destination. A reply arriving on the SMTP listener is
//! checked here at RCPT time (the token exists; the envelope sender is the address the
//! notification was mailed to, else 550 5.7.1), queued durably for the user avatar, which
//! records it as an ack and hands the text to the source's reply path (for a mail source:
//! relayed to the original sender, from the user's tidings address).

use tidings_core::secret::hash_secret;
use tidings_sinks::DestinationConfig;
use tidings_sources::smtp::Refusal;
use tidings_store::rusqlite::OptionalExtension as _;

use crate::destinations;
use crate::services::Services;

/// The local part of reply addresses; no user may have this name.
pub const REPLY_LOCAL: &str = "reply";

/// What a reply address points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTarget {
    pub token_hash: String,
    pub user_id: i64,
    pub notification_id: String,
    pub destination_id: String,
}

/// Whether `token` has the shape of a reply token (32 lowercase hex digits).
pub fn is_token(token: &str) -> bool {
    token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resolves `reply+<token>` and checks that `mail_from` may use it.
pub async fn check(
    services: &Services,
    token: &str,
    mail_from: &str,
) -> Result<ReplyTarget, Refusal> {
    if !is_token(token) {
        return Err(Refusal::UnknownUser);
    }
    let hash = hash_secret(&token.to_ascii_lowercase());
    let secrets = services.secrets.clone();
    let found = services
        .store
        .read(move |c| {
            let row: Option<(i64, String, String)> = c
                .query_row(
                    "SELECT user_id, notification_id, destination_id FROM reply_tokens WHERE token_hash = ?1",
                    [&hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((user_id, notification_id, destination_id)) = row else {
                return Ok(None);
            };
            let dest = destinations::load(c, &secrets, &destination_id)?;
            Ok(Some((
                ReplyTarget {
                    token_hash: hash,
                    user_id,
                    notification_id,
                    destination_id,
                },
                dest,
            )))
        })
        .await
        .map_err(|e| Refusal::Temporary(format!("cannot look the address up: {e}")))?;
    let Some((target, dest)) = found else {
        return Err(Refusal::UnknownUser);
    };
    let allowed = match dest.map(|d| d.config) {
        Some(Ok(DestinationConfig::Mailto(m))) => {
            m.to.trim().eq_ignore_ascii_case(mail_from.trim())
        }
        _ => false,
    };
    if !allowed {
        return Err(Refusal::NotAllowed(
            "Only the recipient of this notification can reply to it".into(),
        ));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_one_shape() {
        assert!(is_token("0123456789abcdef0123456789abcdef"));
        assert!(!is_token("0123456789abcdef0123456789abcde"));
        assert!(!is_token("0123456789abcdef0123456789abcdeg"));
        assert!(!is_token(""));
    }
}
