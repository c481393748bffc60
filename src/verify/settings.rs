//! Verify step 1: the settings the store was committed with, against the
//! job file and the catalog `tally verify` is given (SEMANTICS.md, "Settings
//! a store is bound to").
//!
//! A recount under other counting settings, or with another catalog than
//! the one the last commit was made with, would report differences that say
//! nothing about the job: such a verification is refused, naming the
//! setting or the catalog to use. A store from before settings were
//! recorded cannot be checked; the report says so.

use std::path::Path;

use crate::catalog::{Catalog, CatalogError};
use crate::job::Job;
use crate::store::settings::{CatalogStamp, RunSettings, SETTINGS_KEY};
use crate::store::StoreSnapshot;

use super::VerifyError;

/// The note in the report when the store records no settings.
pub const UNCHECKED_NOTE: &str =
    "note: the store records no job settings (it was made before they were committed): the catalog and the counting settings could not be checked";

/// A catalog file, parsed, with the stamp of the bytes it was parsed from.
#[derive(Clone, Debug)]
pub struct CatalogFile {
    pub catalog: Catalog,
    pub stamp: CatalogStamp,
}

impl CatalogFile {
    /// Reads the catalog at `path` once: its stamp and its versions come
    /// from the same bytes. Errors name the path.
    pub fn load(path: &Path) -> Result<CatalogFile, CatalogError> {
        let (catalog, bytes) = Catalog::load_with_bytes(path)?;
        Ok(CatalogFile { catalog, stamp: CatalogStamp::of(path, &bytes) })
    }
}

/// Refuses a job or catalog the store's last commit was not made with.
/// Returns the note for the report when the store records no settings.
pub fn check(snapshot: &dyn StoreSnapshot, job: &Job, catalog: Option<&CatalogStamp>) -> Result<Option<String>, VerifyError> {
    let Some(bytes) = snapshot.state(SETTINGS_KEY)? else {
        return Ok(Some(UNCHECKED_NOTE.to_string()));
    };
    let stored = RunSettings::from_json(&bytes).map_err(VerifyError::Settings)?;
    if let Some(change) = job.settings(catalog.cloned()).incompatible_with(&stored) {
        return Err(VerifyError::Incompatible { key: change.key, stored: change.stored, given: change.given });
    }
    check_catalog(stored.catalog.as_ref(), catalog)?;
    Ok(None)
}

fn check_catalog(stored: Option<&CatalogStamp>, given: Option<&CatalogStamp>) -> Result<(), VerifyError> {
    let refusal = match (stored, given) {
        (None, None) => return Ok(()),
        (Some(stored), Some(given)) if stored.fingerprint == given.fingerprint => return Ok(()),
        (Some(stored), None) => format!(
            "the store's last commit was made with catalog {} (fingerprint {}); pass it with --catalog",
            stored.path, stored.fingerprint
        ),
        (Some(stored), Some(given)) => format!(
            "the store's last commit was made with catalog {} (fingerprint {}), not {} (fingerprint {}); pass it with --catalog",
            stored.path, stored.fingerprint, given.path, given.fingerprint
        ),
        (None, Some(given)) => format!(
            "the store's last commit was made without a catalog, not with {} (fingerprint {}); verify with a job file that names none",
            given.path, given.fingerprint
        ),
    };
    Err(VerifyError::Catalog(refusal))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(bytes: &[u8]) -> CatalogStamp {
        CatalogStamp::of(Path::new("ads.csv"), bytes)
    }

    #[test]
    fn the_catalog_must_have_the_stored_fingerprint_whatever_its_path() {
        let stored = stamp(b"a,c,x\n");
        let moved = CatalogStamp::of(Path::new("elsewhere/ads.csv"), b"a,c,x\n");
        assert!(check_catalog(Some(&stored), Some(&moved)).is_ok());
        assert!(check_catalog(None, None).is_ok());
        let other = check_catalog(Some(&stored), Some(&stamp(b"a,c,y\n"))).unwrap_err().to_string();
        assert!(other
            .starts_with(&format!("verify: the store's last commit was made with catalog ads.csv (fingerprint {})", stored.fingerprint)));
        assert!(other.ends_with("; pass it with --catalog"), "{other}");
        let none = check_catalog(Some(&stored), None).unwrap_err().to_string();
        assert_eq!(
            none,
            format!(
                "verify: the store's last commit was made with catalog ads.csv (fingerprint {}); pass it with --catalog",
                stored.fingerprint
            )
        );
        assert!(check_catalog(None, Some(&stored)).unwrap_err().to_string().contains("made without a catalog"));
    }

    /// The recount reads a catalog file exactly as the job does, errors
    /// included, and stamps the bytes as they are (a byte order mark too).
    #[test]
    fn a_catalog_file_reads_as_the_jobs_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ads.csv");
        let text =
            "\u{feff}ad_id,campaign_id,advertiser_id,valid_from\r\na,c1,x,2026-12-07T10:00:00Z\r\na,c2,x,2026-12-07T12:00:00+01:00\r\n";
        std::fs::write(&path, text).unwrap();
        let file = CatalogFile::load(&path).unwrap();
        assert_eq!(file.catalog, Catalog::load(&path).unwrap());
        assert_eq!(file.catalog.versions().count(), 2);
        assert_eq!(file.stamp, CatalogStamp::of(&path, text.as_bytes()));
        for bad in ["ad_id,campaign_id,advertiser_id\n", "a,c1\n"] {
            std::fs::write(&path, bad).unwrap();
            assert_eq!(CatalogFile::load(&path).unwrap_err().to_string(), Catalog::load(&path).unwrap_err().to_string(), "{bad:?}");
        }
    }
}
