//! The user-id salt and the keyed hash that replaces every `user_id`.
//!
//! This is the PII boundary of the pipeline: every way into the job (a click
//! file, `tally log import`, HTTP ingest, a foreign Kafka producer) hashes the
//! raw `user_id` with [`user_key`] as it decodes the click, and only the
//! 64-bit [`UserKey`] travels further.

use std::fmt;

use siphasher::sip::SipHasher13;

use super::UserKey;

/// The secret key of the user hash.
///
/// The salt makes [`UserKey`]s useless for joining against other data sets or
/// for guessing user ids offline. `Debug` does not print it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UserSalt([u8; 16]);

impl UserSalt {
    /// The salt of file runs that configure none.
    ///
    /// It is fixed so that two runs over the same file (and `tally verify`)
    /// produce the same user keys and thus the same `distinct_users`. It is
    /// public, so it does not hide user ids from anyone who can read this
    /// source: configure a secret salt for real traffic.
    pub const FILE_DEFAULT: UserSalt = UserSalt(*b"tally.file.salt1");

    pub const fn from_bytes(bytes: [u8; 16]) -> UserSalt {
        UserSalt(bytes)
    }

    /// The key's bytes, for handing it to the other processes of a cluster.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

impl fmt::Debug for UserSalt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UserSalt(..)")
    }
}

/// The scrubbed user: keyed SipHash-1-3 (64-bit) of the `user_id` bytes.
pub fn user_key(salt: &UserSalt, user_id: &str) -> UserKey {
    SipHasher13::new_with_key(&salt.0).hash(user_id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salt_keys_the_user_hash() {
        let other = UserSalt::from_bytes([7; 16]);
        assert_ne!(user_key(&other, "u1"), user_key(&UserSalt::FILE_DEFAULT, "u1"));
        assert_ne!(user_key(&other, "u1"), user_key(&other, "u2"));
        assert_eq!(format!("{other:?}"), "UserSalt(..)");
    }

    /// Guards the keys of file runs: changing the default salt or the hash
    /// would change every `distinct_users` of every stored file run.
    #[test]
    fn file_default_user_key_is_pinned() {
        assert_eq!(user_key(&UserSalt::FILE_DEFAULT, "u1"), PINNED_U1);
    }
    const PINNED_U1: u64 = 18_194_875_764_523_507_851;
}
