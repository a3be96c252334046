//! The symmetric-encrypted channel for devices without DTLS (Alibaba's port 5682).
//!
//! `/auth` is plain JSON (its sign proves possession of the device secret) and answers
//! `{"token","random","seqOffset"}`. Both sides then derive
//! `key = SHA-256(deviceSecret ‖ random)[0..16]` and every `/topic/…` payload is AES-128-GCM
//! with nonce `0x00000000 ‖ seq (8 bytes, big-endian)` and the token as associated data; `seq`
//! travels in CoAP option 2089 and must grow with every message, starting above `seqOffset`.
//! The answer is sealed with the same key and seq (the direction is implied by the exchange, and
//! each seq is accepted once, so a nonce is never reused for two different device messages).

use std::collections::HashMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Nonce};
use parking_lot::Mutex;
use rand::Rng;
use sha2::{Digest, Sha256};

/// The CoAP option carrying the sequence number (big-endian unsigned, 0–8 bytes).
pub const SEQ_OPTION: u16 = 2089;

pub type Key = [u8; 16];

/// `SHA-256(deviceSecret ‖ random)[0..16]`.
pub fn derive_key(device_secret: &str, random: &str) -> Key {
    let digest = Sha256::new()
        .chain_update(device_secret.as_bytes())
        .chain_update(random.as_bytes())
        .finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// `0x00000000 ‖ seq` big-endian.
pub fn nonce(seq: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    n
}

pub fn seal(key: &Key, seq: u64, token: &str, plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes128Gcm::new(key.into());
    cipher
        .encrypt(
            Nonce::from_slice(&nonce(seq)),
            Payload {
                msg: plaintext,
                aad: token.as_bytes(),
            },
        )
        .expect("AES-GCM encryption of a bounded payload cannot fail")
}

/// Decrypts and authenticates; `None` when the key, seq, token or ciphertext do not match.
pub fn open(key: &Key, seq: u64, token: &str, ciphertext: &[u8]) -> Option<Vec<u8>> {
    Aes128Gcm::new(key.into())
        .decrypt(
            Nonce::from_slice(&nonce(seq)),
            Payload {
                msg: ciphertext,
                aad: token.as_bytes(),
            },
        )
        .ok()
}

/// Decodes option 2089: a big-endian unsigned integer of at most 8 bytes.
pub fn decode_seq(value: &[u8]) -> Option<u64> {
    (value.len() <= 8).then(|| value.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// Encodes a seq the way CoAP encodes uint options: without leading zero bytes.
pub fn encode_seq(seq: u64) -> Vec<u8> {
    let bytes = seq.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

/// What `/auth` hands out besides the token.
pub struct Grant {
    pub random: String,
    pub seq_offset: u64,
}

impl Grant {
    pub fn new() -> Self {
        let mut rng = rand::rng();
        let random: [u8; 16] = rng.random();
        Grant {
            random: hex::encode(random),
            // Small enough for any device's counter, random so that a restarted device cannot
            // assume a value; the device must start above it.
            seq_offset: rng.random_range(1..1_000_000),
        }
    }
}

impl Default for Grant {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum SeqError {
    /// No key for this token on this node (issued elsewhere, expired, or evicted).
    UnknownToken,
    Replayed {
        last: u64,
    },
}

struct Session {
    key: Key,
    last_seq: u64,
    expires_at_ms: i64,
}

/// Keys and the highest accepted seq, by token. Bounded: when full, expired sessions go first,
/// then the one closest to expiry (its device gets 4.01 and authenticates again).
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    max: usize,
}

impl Sessions {
    pub fn new(max: usize) -> Self {
        Sessions {
            map: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    pub fn insert(&self, token: &str, key: Key, seq_offset: u64, expires_at_ms: i64, now_ms: i64) {
        let mut map = self.map.lock();
        if map.len() >= self.max && !map.contains_key(token) {
            map.retain(|_, s| s.expires_at_ms > now_ms);
            if map.len() >= self.max
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, s)| s.expires_at_ms)
                    .map(|(t, _)| t.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            token.to_string(),
            Session {
                key,
                last_seq: seq_offset,
                expires_at_ms,
            },
        );
    }

    /// The key for a message numbered `seq`, if that number is still unused. Does not consume
    /// it: call [`Sessions::accept`] once the payload authenticated, so that forged messages
    /// cannot push the counter up and lock the device out.
    pub fn key_for(&self, token: &str, seq: u64, now_ms: i64) -> Result<Key, SeqError> {
        let map = self.map.lock();
        let s = map
            .get(token)
            .filter(|s| s.expires_at_ms > now_ms)
            .ok_or(SeqError::UnknownToken)?;
        if seq <= s.last_seq {
            return Err(SeqError::Replayed { last: s.last_seq });
        }
        Ok(s.key)
    }

    /// Consumes `seq`; fails if a concurrent message took it (or a higher one) first.
    pub fn accept(&self, token: &str, seq: u64) -> Result<(), SeqError> {
        let mut map = self.map.lock();
        let s = map.get_mut(token).ok_or(SeqError::UnknownToken)?;
        if seq <= s.last_seq {
            return Err(SeqError::Replayed { last: s.last_seq });
        }
        s.last_seq = seq;
        Ok(())
    }

    pub fn sweep(&self, now_ms: i64) {
        self.map.lock().retain(|_, s| s.expires_at_ms > now_ms);
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_and_bind_seq_and_token() {
        let key = derive_key("secret", "abcd");
        let c = seal(&key, 42, "tok", b"{\"id\":\"1\"}");
        assert_eq!(open(&key, 42, "tok", &c).unwrap(), b"{\"id\":\"1\"}");
        assert!(open(&key, 43, "tok", &c).is_none(), "seq is in the nonce");
        assert!(open(&key, 42, "other", &c).is_none(), "token is the AAD");
        assert!(open(&derive_key("secret", "abce"), 42, "tok", &c).is_none());
        assert!(open(&key, 42, "tok", b"short").is_none());
        assert!(open(&key, 42, "tok", &[]).is_none());
    }

    #[test]
    fn key_derivation_is_the_documented_one() {
        // SHA-256("secret" ‖ "abcd") = 5b2e…; the key is its first 16 bytes.
        let full = Sha256::digest(b"secretabcd");
        assert_eq!(derive_key("secret", "abcd")[..], full[..16]);
        assert_eq!(nonce(0x0102)[..], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn seq_must_grow_and_is_consumed_only_on_accept() {
        let s = Sessions::new(10);
        s.insert("t", [1; 16], 100, 10_000, 0);
        assert_eq!(
            s.key_for("t", 100, 0),
            Err(SeqError::Replayed { last: 100 })
        );
        assert!(s.key_for("t", 101, 0).is_ok());
        assert!(s.key_for("t", 101, 0).is_ok(), "not consumed before accept");
        s.accept("t", 101).unwrap();
        assert_eq!(
            s.key_for("t", 101, 0),
            Err(SeqError::Replayed { last: 101 })
        );
        assert_eq!(s.accept("t", 50), Err(SeqError::Replayed { last: 101 }));
        assert_eq!(
            s.key_for("t", 500, 20_000),
            Err(SeqError::UnknownToken),
            "expired"
        );
        assert_eq!(s.key_for("nope", 1, 0), Err(SeqError::UnknownToken));
    }

    #[test]
    fn sessions_are_bounded() {
        let s = Sessions::new(2);
        s.insert("a", [0; 16], 0, 100, 0);
        s.insert("b", [0; 16], 0, 200, 0);
        s.insert("c", [0; 16], 0, 300, 0);
        assert_eq!(s.len(), 2);
        assert_eq!(s.key_for("a", 1, 0), Err(SeqError::UnknownToken));
        assert!(s.key_for("c", 1, 0).is_ok());
    }

    #[test]
    fn seq_option_codec() {
        assert_eq!(decode_seq(&encode_seq(0)), Some(0));
        assert_eq!(encode_seq(0), Vec::<u8>::new());
        assert_eq!(decode_seq(&encode_seq(u64::MAX)), Some(u64::MAX));
        assert_eq!(decode_seq(&[0; 9]), None);
    }
}
