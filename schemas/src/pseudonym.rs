//! Caller pseudonymisation: a keyed HMAC-SHA256 of the normalised caller number.
//!
//! The key comes from a file (`CDRFLOW_CALLER_KEY_FILE`) or the environment
//! (`CDRFLOW_CALLER_KEY`), never from a command-line flag, and is never logged. The hash
//! is truncated to 128 bits (as RFC 2104 §5 allows): the same caller gets the same
//! pseudonym under the same key, so repeat calls can be counted, but the number cannot be
//! recovered without the key, and a dictionary of all 10¹⁰ Russian mobile numbers is
//! useless without it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::line::normalise_into;

/// Environment variable holding the key itself.
pub const KEY_ENV: &str = "CDRFLOW_CALLER_KEY";
/// Environment variable naming a file that holds the key.
pub const KEY_FILE_ENV: &str = "CDRFLOW_CALLER_KEY_FILE";

/// A caller pseudonym: the first 16 bytes of HMAC-SHA256(key, normalised number).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallerHash(pub [u8; 16]);

impl std::fmt::Debug for CallerHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CallerHash({})", hex::encode(self.0))
    }
}

/// Hashes caller numbers with a secret key.
#[derive(Clone)]
pub struct Pseudonymiser {
    /// The keyed HMAC state, cloned per number; `None` for [`Pseudonymiser::check_only`].
    keyed: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymiser(<key redacted>)")
    }
}

/// Where the key was looked for and why it is unusable.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Neither variable is set.
    #[error(
        "no caller-hashing key: set {KEY_FILE_ENV} to a file holding the key (or {KEY_ENV} to the key itself); make one with `head -c 32 /dev/urandom | base64 > caller.key`"
    )]
    Missing,
    /// The key file could not be read.
    #[error("cannot read the caller-hashing key file named by {KEY_FILE_ENV} ({path}): {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why (shown once: not an error source, which a chain would print again).
        reason: std::io::Error,
    },
    /// The key is too short to be a secret.
    #[error("the caller-hashing key is {0} bytes; use at least 16 random bytes")]
    TooShort(usize),
}

impl Pseudonymiser {
    /// A pseudonymiser with this key (at least 16 bytes).
    pub fn new(key: &[u8]) -> Result<Self, KeyError> {
        if key.len() < 16 {
            return Err(KeyError::TooShort(key.len()));
        }
        Ok(Pseudonymiser { keyed: Some(Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length")) })
    }

    /// The key from `CDRFLOW_CALLER_KEY_FILE` (preferred) or `CDRFLOW_CALLER_KEY`.
    /// Surrounding whitespace in the file is ignored.
    pub fn from_env() -> Result<Self, KeyError> {
        if let Some(path) = std::env::var_os(KEY_FILE_ENV) {
            let bytes = std::fs::read(&path)
                .map_err(|reason| KeyError::Unreadable { path: path.to_string_lossy().into_owned(), reason })?;
            return Self::new(bytes.trim_ascii());
        }
        match std::env::var(KEY_ENV) {
            Ok(k) => Self::new(k.trim().as_bytes()),
            Err(_) => Err(KeyError::Missing),
        }
    }

    /// A pseudonymiser with a fresh random key, for commands that never write hashes
    /// (`cdrflow validate`).
    pub fn ephemeral() -> Self {
        use std::io::Read;
        let mut key = [0u8; 32];
        if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key)).is_err() {
            // No OS randomness: the clock will do for a key whose hashes are never written.
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            key[..16].copy_from_slice(&t.as_nanos().to_le_bytes());
        }
        Self::new(&key).expect("32-byte key")
    }

    /// Checks caller numbers exactly as a keyed pseudonymiser does (the same records are
    /// rejected) but hashes nothing: every caller gets the all-zero pseudonym. For workers
    /// that never read or write hashes (the aggregator, `cdrflow validate`), which would
    /// otherwise spend ~13 % of their decoding on an HMAC they throw away.
    pub fn check_only() -> Self {
        Pseudonymiser { keyed: None }
    }

    /// The pseudonym of a caller number; `None` if the number is withheld (empty) or not a
    /// number. Equivalent spellings (`+7 912 …`, `8912…`) give the same pseudonym.
    #[inline]
    pub fn hash(&self, number: &str) -> Option<CallerHash> {
        let mut digits = [0u8; 20];
        let n = normalise_into(number, &mut digits)?;
        let Some(keyed) = &self.keyed else { return Some(CallerHash([0; 16])) };
        let mut mac = keyed.clone();
        mac.update(&digits[..n]);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        Some(CallerHash(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_caller_same_pseudonym_under_one_key_only() {
        let p = Pseudonymiser::new(b"0123456789abcdef0123").unwrap();
        let q = Pseudonymiser::new(b"another key, also secret").unwrap();
        let a = p.hash("+7 (912) 345-67-89").unwrap();
        assert_eq!(Some(a), p.hash("89123456789"));
        assert_ne!(Some(a), p.hash("89123456788"));
        assert_ne!(Some(a), q.hash("89123456789"));
        assert_eq!(p.hash(""), None);
        let check = Pseudonymiser::check_only();
        for n in ["+7 (912) 345-67-89", "89123456789", "", "12ab", "+", "8 800 200-01-22"] {
            assert_eq!(check.hash(n).is_some(), p.hash(n).is_some(), "{n:?} is judged alike");
        }
        assert_eq!(check.hash("89123456789"), Some(CallerHash([0; 16])));
        assert!(!format!("{p:?}").contains("0123"));
    }

    #[test]
    fn hash_is_hmac_sha256_truncated() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?" is not a phone
        // number, so check the construction directly against a digits-only message instead.
        let key = b"key-of-sixteen-bytes";
        let p = Pseudonymiser::new(key).unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(b"89123456789");
        let want = mac.finalize().into_bytes();
        assert_eq!(p.hash("+79123456789").unwrap().0[..], want[..16]);
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(Pseudonymiser::new(b"short"), Err(KeyError::TooShort(5))));
    }
}
