//! The bytes of one remote entry: a 4-byte format tag, dimension (u32 LE), tokens (u32 LE),
//! the vector (f32 LE), then a seal over the key and everything before it. The key is in
//! the seal, so a value copied under another key is refused like a damaged one.
//!
//! - `MMv2`, with a secret: the seal is HMAC-SHA256 under the replicas' shared secret
//!   (32 bytes). Only a holder of the secret can write a value this tier serves.
//! - `MMv1`, without one: the seal is an xxh3-64 checksum (8 bytes). It catches damage,
//!   not forgery: anyone who can write to the store can write a value that passes.
//!
//! A tier reads only its own format: with a secret, an `MMv1` value (an older replica's, or
//! a forgery) is a miss; without one, an `MMv2` value cannot be checked and is a miss too.

use super::super::CachedEmbedding;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const CHECKSUMMED: &[u8; 4] = b"MMv1";
const AUTHENTICATED: &[u8; 4] = b"MMv2";
const HEADER: usize = 12;
/// Largest vector taken (65,536 dimensions): anything bigger is refused unread.
const MAX_BODY: usize = HEADER + 65_536 * 4;

/// Why a stored value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not a value of this tier's format, cut short, or its checksum does not match.
    Corrupt,
    /// Intact, but not the dimension the model produces.
    WrongDimension(usize),
    /// Not sealed with this tier's secret: forged, written with another secret, or in the
    /// format of the other mode (with or without a secret).
    Unauthenticated,
}

/// How values are sealed: with the replicas' shared secret, or only checksummed.
#[derive(Clone)]
pub struct Seal {
    secret: Option<std::sync::Arc<[u8]>>,
}

/// Never prints the secret.
impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seal")
            .field("authenticated", &self.secret.is_some())
            .finish()
    }
}

impl Seal {
    /// Seals with HMAC-SHA256 under `secret`, or with a checksum when there is none.
    pub fn new(secret: Option<Vec<u8>>) -> Self {
        Self {
            secret: secret.map(Into::into),
        }
    }

    /// Whether values are authenticated (a secret is set).
    pub fn authenticated(&self) -> bool {
        self.secret.is_some()
    }

    fn tag(&self) -> &'static [u8; 4] {
        match self.secret {
            Some(_) => AUTHENTICATED,
            None => CHECKSUMMED,
        }
    }

    fn seal_len(&self) -> usize {
        match self.secret {
            Some(_) => 32,
            None => 8,
        }
    }

    fn mac(&self, secret: &[u8], key: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
        mac.update(key.as_bytes());
        mac.update(&[0]);
        mac.update(body);
        mac
    }

    /// The longest stored value that can decode for a model of `dimension` (any dimension
    /// up to the largest taken, when unknown): a store reads at most this much of a value
    /// and one more byte, so a value that anyone made huge is never read whole.
    pub fn max_stored_len(&self, dimension: Option<usize>) -> usize {
        let body = dimension.map_or(MAX_BODY, |d| {
            HEADER.saturating_add(d.saturating_mul(4)).min(MAX_BODY)
        });
        body + self.seal_len()
    }

    /// The stored form of `entry` under `key`.
    pub fn encode(&self, key: &str, entry: &CachedEmbedding) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + entry.vector.len() * 4 + self.seal_len());
        out.extend_from_slice(self.tag());
        out.extend_from_slice(&(entry.vector.len() as u32).to_le_bytes());
        out.extend_from_slice(&entry.tokens.to_le_bytes());
        for v in entry.vector.iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
        match &self.secret {
            Some(secret) => {
                let tag = self.mac(secret, key, &out).finalize().into_bytes();
                out.extend_from_slice(&tag);
            }
            None => out.extend_from_slice(&checksum(key, &out).to_le_bytes()),
        }
        out
    }

    /// The entry stored as `bytes` under `key`; `dimension` is the model's, when known.
    pub fn decode(
        &self,
        key: &str,
        bytes: &[u8],
        dimension: Option<usize>,
    ) -> Result<CachedEmbedding, Refused> {
        let other = match self.secret {
            Some(_) => CHECKSUMMED,
            None => AUTHENTICATED,
        };
        if bytes.starts_with(other) {
            return Err(Refused::Unauthenticated);
        }
        let seal = self.seal_len();
        if bytes.len() < HEADER + seal
            || bytes.len() > MAX_BODY + seal
            || !bytes.starts_with(self.tag())
        {
            return Err(Refused::Corrupt);
        }
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let dim = word(4) as usize;
        if bytes.len() != HEADER + dim * 4 + seal {
            return Err(Refused::Corrupt);
        }
        // Another dimension: refused before hashing a possibly large value.
        if dimension.is_some_and(|d| d != dim) || dim == 0 {
            return Err(Refused::WrongDimension(dim));
        }
        let (body, tail) = bytes.split_at(bytes.len() - seal);
        match &self.secret {
            Some(secret) => self
                .mac(secret, key, body)
                .verify_slice(tail)
                .map_err(|_| Refused::Unauthenticated)?,
            None if checksum(key, body).to_le_bytes() != tail => return Err(Refused::Corrupt),
            None => {}
        }
        let vector: Vec<f32> = body[HEADER..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(CachedEmbedding {
            vector: vector.into(),
            tokens: word(8),
        })
    }
}

fn checksum(key: &str, body: &[u8]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(key.as_bytes());
    hasher.update(&[0]);
    hasher.update(body);
    hasher.digest()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(vector: Vec<f32>, tokens: u32) -> CachedEmbedding {
        CachedEmbedding {
            vector: vector.into(),
            tokens,
        }
    }

    fn seals() -> [Seal; 2] {
        [Seal::new(None), Seal::new(Some(b"a secret".to_vec()))]
    }

    #[test]
    fn round_trips_bit_for_bit() {
        for seal in seals() {
            let e = entry(vec![0.1, -0.0, f32::MIN_POSITIVE, 3.5e-42], 7);
            let back = seal.decode("k", &seal.encode("k", &e), Some(4)).unwrap();
            let bits =
                |e: &CachedEmbedding| e.vector.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&back), bits(&e));
            assert_eq!(back.tokens, 7);
        }
    }

    #[test]
    fn refuses_damage_other_keys_and_dimensions() {
        for seal in seals() {
            let bytes = seal.encode("k", &entry(vec![1.0, 2.0], 3));
            assert!(seal.decode("other", &bytes, None).is_err());
            assert_eq!(
                seal.decode("k", &bytes[..bytes.len() - 1], None),
                Err(Refused::Corrupt)
            );
            assert_eq!(seal.decode("k", b"garbage", None), Err(Refused::Corrupt));
            assert_eq!(
                seal.decode("k", &bytes, Some(3)),
                Err(Refused::WrongDimension(2))
            );
            for i in 0..bytes.len() {
                let mut flipped = bytes.clone();
                flipped[i] ^= 0x10;
                assert!(
                    seal.decode("k", &flipped, None).is_err(),
                    "{seal:?}: bit flip at byte {i} accepted"
                );
            }
        }
    }

    #[test]
    fn the_longest_value_read_is_the_longest_that_decodes() {
        for seal in seals() {
            let bytes = seal.encode("k", &entry(vec![1.0, 2.0], 3));
            assert_eq!(seal.max_stored_len(Some(2)), bytes.len());
            assert!(seal.decode("k", &bytes, Some(2)).is_ok());
            let longest = seal.max_stored_len(None);
            assert_eq!(longest, MAX_BODY + seal.seal_len());
            assert_eq!(seal.max_stored_len(Some(usize::MAX)), longest);
            // A value cut one byte past the longest (as a store returns one too long) is
            // refused unread.
            let cut = vec![0u8; longest + 1];
            assert_eq!(seal.decode("k", &cut, None), Err(Refused::Corrupt));
        }
    }

    #[test]
    fn with_a_secret_only_values_sealed_with_it_pass() {
        let [checksummed, ours] = seals();
        let theirs = Seal::new(Some(b"another secret".to_vec()));
        let e = entry(vec![1.0, 2.0], 3);
        // A checksummed value is what anyone can forge: a miss for a tier with a secret.
        let forged = checksummed.encode("k", &e);
        assert_eq!(
            ours.decode("k", &forged, None),
            Err(Refused::Unauthenticated)
        );
        assert_eq!(
            ours.decode("k", &theirs.encode("k", &e), None),
            Err(Refused::Unauthenticated)
        );
        // And a tier without one cannot check an authenticated value.
        assert_eq!(
            checksummed.decode("k", &ours.encode("k", &e), None),
            Err(Refused::Unauthenticated)
        );
        assert_eq!(
            ours.decode("other", &ours.encode("k", &e), None),
            Err(Refused::Unauthenticated)
        );
        assert_eq!(format!("{ours:?}"), "Seal { authenticated: true }");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            for seal in seals() {
                let _ = seal.decode("k", &bytes, None);
                let _ = seal.decode("k", &bytes, Some(2));
            }
        }
    }
}
