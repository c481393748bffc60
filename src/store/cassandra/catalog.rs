//! The ad catalog in Cassandra: which campaign and advertiser each ad
//! belongs to, and since when, as the job counted with it.
//!
//! The job reads its catalog from a file (`crate::catalog`) and publishes it
//! here when it starts, under the catalog's fingerprint, so that readers
//! beside Cassandra (the query API, tools) attribute ads with the very
//! catalog the counts were made with; the committed settings name that
//! fingerprint (`store::settings`). A catalog is published once: every ad
//! version first, then its `catalogs` row, so a catalog listed there is
//! whole, and a publication cut short is simply done again by the next
//! start. The rows are absolute values keyed by the fingerprint: writing
//! them twice changes nothing.

use futures::future::BoxFuture;
use scylla::errors::ExecutionError;

use super::db::Db;
use super::layout::{saturating_signed, unsigned};
use crate::catalog::Catalog;
use crate::event::Key;
use crate::store::settings::CatalogStamp;
use crate::store::StoreError;

/// A published catalog, as its `catalogs` row describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedCatalog {
    /// Where the job read it.
    pub path: String,
    pub ads: u64,
    pub versions: u64,
}

/// Campaign and advertiser of one ad version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdVersion {
    pub valid_from: u64,
    pub campaign: Key,
    pub advertiser: Key,
}

/// Publishes `catalog` under its stamp's fingerprint, unless it already is.
/// Returns whether it wrote anything.
pub fn publish(db: &Db, stamp: &CatalogStamp, catalog: &Catalog) -> Result<bool, StoreError> {
    if published(db, &stamp.fingerprint)?.is_some() {
        return Ok(false);
    }
    let fingerprint = stamp.fingerprint.as_str();
    let writes: Vec<BoxFuture<'_, Result<(), ExecutionError>>> = catalog
        .versions()
        .map(|(ad, valid_from, campaign, advertiser)| {
            let values = (db.job.as_str(), fingerprint, ad.as_str(), saturating_signed(valid_from), campaign.as_str(), advertiser.as_str());
            db.write(&db.st.put_ad_version, values)
        })
        .collect();
    let versions = writes.len();
    db.write_all(writes)?;
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let row = (db.job.as_str(), fingerprint, stamp.path.as_str(), count(catalog.len_ads()), count(versions));
    db.write_all(vec![db.write(&db.st.put_catalog, row)])?;
    Ok(true)
}

/// The `catalogs` row of a fingerprint, if that catalog was published whole.
pub fn published(db: &Db, fingerprint: &str) -> Result<Option<PublishedCatalog>, StoreError> {
    let rows: Vec<(Option<String>, Option<i32>, Option<i32>)> = db.read_all(&db.st.catalog, (db.job.as_str(), fingerprint))?;
    let count = |n: Option<i32>| n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
    Ok(rows.into_iter().next().map(|(path, ads, versions)| PublishedCatalog {
        path: path.unwrap_or_default(),
        ads: count(ads),
        versions: count(versions),
    }))
}

/// The version of `ad` in the catalog `fingerprint` for the 1m window
/// starting at `window_start`: the latest with `valid_from <= window_start`
/// (`crate::catalog::Catalog::lookup`'s rule).
pub fn ad_version(db: &Db, fingerprint: &str, ad: &str, window_start: u64) -> Result<Option<AdVersion>, StoreError> {
    let values = (db.job.as_str(), fingerprint, ad, saturating_signed(window_start));
    let rows: Vec<(i64, Option<String>, Option<String>)> = db.read_all(&db.st.ad_version, values)?;
    let Some((valid_from, campaign, advertiser)) = rows.into_iter().next() else { return Ok(None) };
    let valid_from = unsigned(valid_from).ok_or_else(|| db.corrupt(format!("catalog {fingerprint}: ad {ad} valid_from {valid_from}")))?;
    let key = |k: Option<String>| Key::from(k.unwrap_or_default().as_str());
    Ok(Some(AdVersion { valid_from, campaign: key(campaign), advertiser: key(advertiser) }))
}
