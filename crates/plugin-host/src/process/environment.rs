//! What a plugin child inherits of the host's environment: everything a library may need
//! (`PATH`, `HOME`, `LD_LIBRARY_PATH`, `CUDA_VISIBLE_DEVICES`, its own variables), except
//! the host's secrets. Third-party code in the child could otherwise read the Redis value
//! secret and forge values every replica trusts, or take the API key or the hub token.

use std::ffi::OsStr;
use std::process::Command;

/// Variables never passed to a plugin child.
pub const WITHHELD: &[&str] = &[
    // The Redis tier's value secret.
    "MM_REDIS_SECRET",
    // `mm serve`'s API key.
    "MM_API_KEY",
    // Hugging Face hub tokens.
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
];

/// Settings overrides (`CORE_MODEL_MANAGER_<KEY>`) may carry a password (a Redis URL's), and
/// a child reads no settings: none is passed.
pub const WITHHELD_PREFIX: &str = "CORE_MODEL_MANAGER_";

/// Removes from `command` the variables of [`WITHHELD`] and those of `inherited` (the
/// names in the host's environment) that start with [`WITHHELD_PREFIX`].
pub fn withhold_secrets<'a>(command: &mut Command, inherited: impl IntoIterator<Item = &'a OsStr>) {
    for name in WITHHELD {
        command.env_remove(name);
    }
    for name in inherited {
        if name
            .as_encoded_bytes()
            .starts_with(WITHHELD_PREFIX.as_bytes())
        {
            command.env_remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn secrets_and_settings_overrides_are_removed_and_the_rest_kept() {
        let mut command = Command::new("true");
        command.env("KEEP_ME", "1");
        let inherited: Vec<OsString> = [
            "CORE_MODEL_MANAGER_EMBEDDING_CACHE_REDIS_URL",
            "PATH",
            "CUDA_VISIBLE_DEVICES",
        ]
        .map(OsString::from)
        .to_vec();
        withhold_secrets(&mut command, inherited.iter().map(OsString::as_os_str));
        let removed: Vec<&OsStr> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name)
            .collect();
        for name in WITHHELD {
            assert!(removed.contains(&OsStr::new(name)), "{name} passed on");
        }
        assert!(removed.contains(&OsStr::new("CORE_MODEL_MANAGER_EMBEDDING_CACHE_REDIS_URL")));
        assert!(!removed.contains(&OsStr::new("PATH")));
        assert!(!removed.contains(&OsStr::new("CUDA_VISIBLE_DEVICES")));
        assert!(command
            .get_envs()
            .any(|(name, value)| name == "KEEP_ME" && value.is_some()));
    }
}
