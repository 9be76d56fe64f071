//! Random secrets (API tokens, sign-in codes, session ids), their stored hashes and
//! constant-time comparison. Tokens are 190 bits of randomness, so a plain SHA-256 is the
//! right stored form (argon2 is for the low-entropy secrets people choose: passwords).

use rand::Rng;
use sha2::{Digest, Sha256};

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A new random secret: `prefix` followed by 32 base62 characters.
pub fn random_secret(prefix: &str) -> String {
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(prefix.len() + 32);
    s.push_str(prefix);
    for _ in 0..32 {
        s.push(ALPHABET[rng.gen_range(0..ALPHABET.len())] as char);
    }
    s
}

/// The stored form of a secret: lowercase hex SHA-256.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // black_box keeps the optimizer from turning the loop into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_hash_stably() {
        let a = random_secret("tk_");
        let b = random_secret("tk_");
        assert_ne!(a, b);
        assert!(a.starts_with("tk_") && a.len() == 35);
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert!(constant_time_eq(
            hash_secret(&a).as_bytes(),
            hash_secret(&a).as_bytes()
        ));
        assert!(!constant_time_eq(
            hash_secret(&a).as_bytes(),
            hash_secret(&b).as_bytes()
        ));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
