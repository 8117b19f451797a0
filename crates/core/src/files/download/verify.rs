//! What a downloaded file must be before it enters `blobs/`: the size the hub declared, and
//! the hash its etag names (sha256 for LFS files, the git blob sha1 for the others).

use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// The hash a hub etag stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// An LFS file: the sha256 of the content, in hex.
    Sha256(String),
    /// A git file: sha1 of `blob <len>\0` and the content, in hex.
    GitSha1(String),
    /// An etag that names neither (a server that does not say): only the size is checked.
    Unknown,
}

impl Expected {
    /// From the etag (quotes and a weak `W/` prefix removed).
    pub fn from_etag(etag: &str) -> Self {
        let hex = etag
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_ascii_lowercase();
        let is_hex = hex.bytes().all(|b| b.is_ascii_hexdigit());
        match (hex.len(), is_hex) {
            (64, true) => Self::Sha256(hex),
            (40, true) => Self::GitSha1(hex),
            _ => Self::Unknown,
        }
    }
}

/// The hash of `path` in the form `expected` names, if it differs from it (`None`: fine).
pub fn mismatch(path: &Path, expected: &Expected) -> std::io::Result<Option<String>> {
    let actual = match expected {
        Expected::Sha256(_) => hash_file(path, Sha256::new(), None)?,
        Expected::GitSha1(_) => {
            let len = std::fs::metadata(path)?.len();
            hash_file(path, Sha1::new(), Some(format!("blob {len}\0")))?
        }
        Expected::Unknown => return Ok(None),
    };
    let want = match expected {
        Expected::Sha256(h) | Expected::GitSha1(h) => h,
        Expected::Unknown => return Ok(None),
    };
    Ok((actual != *want).then_some(actual))
}

fn hash_file<D: Digest>(
    path: &Path,
    mut hasher: D,
    prefix: Option<String>,
) -> std::io::Result<String> {
    if let Some(prefix) = prefix {
        hasher.update(prefix.as_bytes());
    }
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_name_their_hash() {
        let sha = "a".repeat(64);
        assert_eq!(
            Expected::from_etag(&format!("\"{sha}\"")),
            Expected::Sha256(sha)
        );
        let git = "b".repeat(40);
        assert_eq!(
            Expected::from_etag(&format!("W/\"{git}\"")),
            Expected::GitSha1(git)
        );
        assert_eq!(Expected::from_etag("\"abc-123\""), Expected::Unknown);
    }

    #[test]
    fn git_blob_and_sha256_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "hello\n").unwrap();
        // `git hash-object` of "hello\n", and sha256sum of it.
        let git = Expected::GitSha1("ce013625030ba8dba906f756967f9e9ca394464a".into());
        assert_eq!(mismatch(&path, &git).unwrap(), None);
        let sha = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        assert_eq!(
            mismatch(&path, &Expected::Sha256(sha.into())).unwrap(),
            None
        );
        std::fs::write(&path, "hellO\n").unwrap();
        assert!(mismatch(&path, &git).unwrap().is_some());
    }
}
