//! SASL for client mode, I/O-free: SCRAM-SHA-256 and SCRAM-SHA-1 (RFC 5802, RFC 7677;
//! without channel binding) and PLAIN (RFC 4616). The password is used as given (no
//! SASLprep), which is exact for ASCII passwords.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Mac, SimpleHmac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("the server's SCRAM message is malformed: {0}")]
    Malformed(&'static str),
    #[error("the server's nonce does not extend ours")]
    Nonce,
    #[error("the server asks for {0} PBKDF2 iterations (accepted: 1 to 1000000)")]
    Iterations(u64),
    #[error("the server's signature is wrong (it does not know the password)")]
    ServerSignature,
    #[error("the server reported a SCRAM error: {0}")]
    Server(String),
}

/// The mechanisms this client speaks, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    ScramSha256,
    ScramSha1,
    Plain,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// The best mechanism among those offered; PLAIN only if `plain_ok` (the stream is
    /// encrypted, or the operator allowed it).
    pub fn choose<'a>(
        offered: impl IntoIterator<Item = &'a str>,
        plain_ok: bool,
    ) -> Option<Mechanism> {
        let offered: Vec<&str> = offered.into_iter().collect();
        [
            Mechanism::ScramSha256,
            Mechanism::ScramSha1,
            Mechanism::Plain,
        ]
        .into_iter()
        .filter(|m| *m != Mechanism::Plain || plain_ok)
        .find(|m| offered.contains(&m.name()))
    }
}

/// `\0user\0password`.
pub fn plain(username: &str, password: &str) -> Vec<u8> {
    format!("\0{username}\0{password}").into_bytes()
}

#[derive(Debug, Clone, Copy)]
enum Hash {
    Sha1,
    Sha256,
}

impl Hash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => {
                let mut m = <SimpleHmac<Sha1> as Mac>::new_from_slice(key).expect("any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Hash::Sha256 => {
                let mut m = <SimpleHmac<Sha256> as Mac>::new_from_slice(key).expect("any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => Sha1::digest(data).to_vec(),
            Hash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// PBKDF2 with this HMAC, one block (the output is one hash long).
    fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut first = salt.to_vec();
        first.extend_from_slice(&1u32.to_be_bytes());
        let mut u = self.hmac(password, &first);
        let mut out = u.clone();
        for _ in 1..iterations {
            u = self.hmac(password, &u);
            out.iter_mut().zip(&u).for_each(|(o, x)| *o ^= x);
        }
        out
    }
}

/// One SCRAM exchange.
#[derive(Debug)]
pub struct Scram {
    hash: Hash,
    password: String,
    client_first_bare: String,
    nonce: String,
    server_signature: Option<Vec<u8>>,
}

/// The most PBKDF2 iterations accepted: bounds the CPU a server can make us spend.
pub const MAX_ITERATIONS: u64 = 1_000_000;

impl Scram {
    /// `mechanism` must be one of the SCRAM ones. `nonce` is the client nonce (printable,
    /// no ','): random in use, fixed in tests.
    pub fn new(mechanism: Mechanism, username: &str, password: &str, nonce: &str) -> Scram {
        let hash = match mechanism {
            Mechanism::ScramSha1 => Hash::Sha1,
            _ => Hash::Sha256,
        };
        let user = username.replace('=', "=3D").replace(',', "=2C");
        Scram {
            hash,
            password: password.to_owned(),
            client_first_bare: format!("n={user},r={nonce}"),
            nonce: nonce.to_owned(),
            server_signature: None,
        }
    }

    /// A fresh random client nonce.
    pub fn random_nonce() -> String {
        let bytes: [u8; 18] = rand::random();
        B64.encode(bytes)
    }

    /// The client-first message (the `<auth>` payload).
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The answer to the server-first message (the first challenge).
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, SaslError> {
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| SaslError::Malformed("not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in server_first.split(',') {
            match part.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                Some(("e", v)) => return Err(SaslError::Server(v.to_owned())),
                Some(("m", _)) => return Err(SaslError::Malformed("mandatory extension")),
                _ => {}
            }
        }
        let nonce = nonce.ok_or(SaslError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(SaslError::Nonce);
        }
        let salt = B64
            .decode(salt.ok_or(SaslError::Malformed("no salt"))?)
            .map_err(|_| SaslError::Malformed("salt is not base64"))?;
        let iterations: u64 = iterations
            .ok_or(SaslError::Malformed("no iteration count"))?
            .parse()
            .map_err(|_| SaslError::Malformed("iteration count is not a number"))?;
        if !(1..=MAX_ITERATIONS).contains(&iterations) {
            return Err(SaslError::Iterations(iterations));
        }
        let h = self.hash;
        let salted = h.hi(self.password.as_bytes(), &salt, iterations as u32);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.hash(&client_key);
        // "biws" is base64("n,,"): no channel binding.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key");
        self.server_signature = Some(h.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Whether the client-final message was made (so the next server message is the
    /// server-final one).
    pub fn has_server_signature(&self) -> bool {
        self.server_signature.is_some()
    }

    /// Checks the server-final message (in `<success>`, or a last challenge).
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), SaslError> {
        let text =
            std::str::from_utf8(server_final).map_err(|_| SaslError::Malformed("not UTF-8"))?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(SaslError::Server(e.to_owned()));
        }
        let v = text
            .split(',')
            .find_map(|p| p.strip_prefix("v="))
            .ok_or(SaslError::Malformed("no server signature"))?;
        let v = B64
            .decode(v)
            .map_err(|_| SaslError::Malformed("server signature is not base64"))?;
        match &self.server_signature {
            Some(expected) if *expected == v => Ok(()),
            _ => Err(SaslError::ServerSignature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5802_example() {
        let mut s = Scram::new(
            Mechanism::ScramSha1,
            "user",
            "pencil",
            "fyko+d2lbbFgONRv9qkxdawL",
        );
        assert_eq!(s.client_first(), b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL");
        let last = s
            .client_final(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
            .unwrap();
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        s.verify_server_final(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
            .unwrap();
        assert_eq!(
            s.verify_server_final(b"v=AAAApqV8S7suAoZWja4dJRkFsKQ="),
            Err(SaslError::ServerSignature)
        );
    }

    #[test]
    fn rfc7677_example() {
        let mut s = Scram::new(
            Mechanism::ScramSha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO",
        );
        let last = s
            .client_final(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap();
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        s.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
    }

    #[test]
    fn refuses_a_bad_server_first() {
        let mut s = Scram::new(Mechanism::ScramSha1, "u", "p", "abc");
        assert_eq!(s.client_final(b"r=xyz1,s=QSXC,i=1"), Err(SaslError::Nonce));
        assert_eq!(
            s.client_final(b"r=abc1,s=QSXC,i=100000000"),
            Err(SaslError::Iterations(100_000_000))
        );
        assert!(matches!(
            s.client_final(b"e=unknown-user"),
            Err(SaslError::Server(_))
        ));
    }

    #[test]
    fn chooses_the_best_offered() {
        let offered = ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"];
        assert_eq!(Mechanism::choose(offered, true), Some(Mechanism::ScramSha1));
        assert_eq!(Mechanism::choose(["PLAIN"], false), None);
        assert_eq!(Mechanism::choose(["PLAIN"], true), Some(Mechanism::Plain));
        assert_eq!(
            Mechanism::choose(["SCRAM-SHA-256", "SCRAM-SHA-1"], false),
            Some(Mechanism::ScramSha256)
        );
        assert_eq!(plain("bot", "pw"), b"\0bot\0pw");
    }
}
