//! The bytes of one remote entry: `MMv1`, dimension (u32 LE), tokens (u32 LE), the vector
//! (f32 LE), and an xxh3-64 checksum of the key and everything before it. The key is in the
//! checksum, so a value copied under another key is refused like a damaged one.

use super::super::CachedEmbedding;

const MAGIC: &[u8; 4] = b"MMv1";
const HEADER: usize = 12;
const CHECKSUM: usize = 8;
/// Largest value taken (a 65,536-dimension vector): anything bigger is refused unread.
const MAX_VALUE: usize = HEADER + 65_536 * 4 + CHECKSUM;

/// Why a stored value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not this format, cut short, or the checksum does not match.
    Corrupt,
    /// Intact, but not the dimension the model produces.
    WrongDimension(usize),
}

/// The stored form of `entry` under `key`.
pub fn encode(key: &str, entry: &CachedEmbedding) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + entry.vector.len() * 4 + CHECKSUM);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(entry.vector.len() as u32).to_le_bytes());
    out.extend_from_slice(&entry.tokens.to_le_bytes());
    for v in entry.vector.iter() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let checksum = checksum(key, &out);
    out.extend_from_slice(&checksum.to_le_bytes());
    out
}

/// The entry stored as `bytes` under `key`; `dimension` is the model's, when known.
pub fn decode(
    key: &str,
    bytes: &[u8],
    dimension: Option<usize>,
) -> Result<CachedEmbedding, Refused> {
    if bytes.len() < HEADER + CHECKSUM || bytes.len() > MAX_VALUE || &bytes[..4] != MAGIC {
        return Err(Refused::Corrupt);
    }
    // Sized for another dimension: refused before hashing a possibly large value.
    if let Some(d) = dimension {
        if bytes.len() != HEADER + d * 4 + CHECKSUM {
            return match bytes.len().checked_sub(HEADER + CHECKSUM) {
                Some(body) if body % 4 == 0 => Err(Refused::WrongDimension(body / 4)),
                _ => Err(Refused::Corrupt),
            };
        }
    }
    let (body, tail) = bytes.split_at(bytes.len() - CHECKSUM);
    if checksum(key, body).to_le_bytes() != tail {
        return Err(Refused::Corrupt);
    }
    let word = |at: usize| u32::from_le_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
    let dim = word(4) as usize;
    if body.len() != HEADER + dim * 4 {
        return Err(Refused::Corrupt);
    }
    if dimension.is_some_and(|d| d != dim) || dim == 0 {
        return Err(Refused::WrongDimension(dim));
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

    #[test]
    fn round_trips_bit_for_bit() {
        let e = entry(vec![0.1, -0.0, f32::MIN_POSITIVE, 3.5e-42], 7);
        let back = decode("k", &encode("k", &e), Some(4)).unwrap();
        let bits = |e: &CachedEmbedding| e.vector.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&e));
        assert_eq!(back.tokens, 7);
    }

    #[test]
    fn refuses_damage_other_keys_and_dimensions() {
        let bytes = encode("k", &entry(vec![1.0, 2.0], 3));
        assert_eq!(decode("other", &bytes, None), Err(Refused::Corrupt));
        assert_eq!(
            decode("k", &bytes[..bytes.len() - 1], None),
            Err(Refused::Corrupt)
        );
        assert_eq!(decode("k", b"garbage", None), Err(Refused::Corrupt));
        assert_eq!(
            decode("k", &bytes, Some(3)),
            Err(Refused::WrongDimension(2))
        );
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x10;
            assert!(
                decode("k", &flipped, None).is_err(),
                "bit flip at byte {i} accepted"
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode("k", &bytes, None);
            let _ = decode("k", &bytes, Some(2));
        }
    }
}
