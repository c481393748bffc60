//! Which version of the output the query API serves, per store: the seam
//! [`Versions`] between [`ServedStore`](super::ServedStore) and a store's
//! serving pointer.
//!
//! - The embedded store keeps the pointer in `DATA/serving` and each
//!   version in `DATA/versions/NAME/store` ([`EmbeddedVersions`]).
//! - A Cassandra job keeps it in its keyspace, written only by lightweight
//!   transactions ([`CassandraFollowed`], over `CassandraVersions`), and
//!   a version's rows under an internal job per build.

use std::sync::Arc;

use super::lazy::{cassandra_target, Lazy};
use crate::datadir::DataDir;
use crate::store::cassandra::{CassandraConfig, CassandraVersions, Served};
use crate::store::embedded::EmbeddedReader;
use crate::store::versions::{self, VersionError, LIVE};
use crate::store::{StoreError, StoreReader};

/// The version to serve: its name, and the build of it (a name built
/// again is another `Serving`, to be opened anew).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Serving {
    pub name: String,
    /// `None` for [`LIVE`] and for a store whose names are never rebuilt
    /// while served.
    pub build: Option<String>,
}

impl Serving {
    /// The job's own output.
    pub fn live() -> Serving {
        Serving { name: LIVE.to_owned(), build: None }
    }
}

/// Where the query API learns which version of the output to serve, and
/// opens it. Both are called on a blocking thread (never on an async
/// runtime worker), at most every [`FOLLOW_SWITCH_MS`](super::FOLLOW_SWITCH_MS),
/// and by one caller at a time.
pub trait Versions: Send + Sync {
    /// The version to serve now.
    fn serving(&self) -> Result<Serving, StoreError>;
    /// A reader of `serving`, which is never [`LIVE`].
    fn open(&self, serving: &Serving) -> Result<Arc<dyn StoreReader>, StoreError>;
}

/// The versions of the embedded store: the pointer `DATA/serving`, and
/// `DATA/versions/NAME/store`.
pub struct EmbeddedVersions {
    data_dir: DataDir,
}

impl EmbeddedVersions {
    pub fn new(data_dir: DataDir) -> EmbeddedVersions {
        EmbeddedVersions { data_dir }
    }

    fn unavailable(&self, e: VersionError) -> StoreError {
        StoreError::Io { path: self.data_dir.serving_file(), source: std::io::Error::other(format!("the version to serve: {e}")) }
    }
}

impl Versions for EmbeddedVersions {
    fn serving(&self) -> Result<Serving, StoreError> {
        let name = versions::serving(&self.data_dir).map_err(|e| self.unavailable(e))?;
        Ok(Serving { name, build: None })
    }

    fn open(&self, serving: &Serving) -> Result<Arc<dyn StoreReader>, StoreError> {
        let reader: EmbeddedReader = versions::open(&self.data_dir, &serving.name).map_err(|e| self.unavailable(e))?;
        Ok(Arc::new(reader))
    }
}

/// The versions of a Cassandra job: the serving pointer in its keyspace
/// (one QUORUM read of one partition per look), connected on first use
/// like the live reader ([`Lazy`]); a version's reader shares that
/// connection.
pub struct CassandraFollowed {
    versions: Lazy<CassandraVersions>,
}

impl CassandraFollowed {
    /// Job `job`'s versions, read only: nothing is created.
    pub fn new(config: &CassandraConfig, job: &str) -> CassandraFollowed {
        let (config, job) = (config.clone(), job.to_owned());
        let versions = Lazy::new(cassandra_target(&config, &job), move || {
            CassandraVersions::open(&config, &job).map(Arc::new).map_err(|e| match e {
                VersionError::Store(e) => e,
                other => StoreError::Backend { target: String::new(), source: other.to_string().into() },
            })
        });
        CassandraFollowed { versions }
    }

    fn unavailable(&self, e: VersionError) -> StoreError {
        match e {
            VersionError::Store(e) => e,
            other => self.versions.error(format!("the version to serve: {other}")),
        }
    }
}

impl Versions for CassandraFollowed {
    fn serving(&self) -> Result<Serving, StoreError> {
        let served = self.versions.get()?.serving().map_err(|e| self.unavailable(e))?;
        Ok(Serving { name: served.name, build: served.build })
    }

    fn open(&self, serving: &Serving) -> Result<Arc<dyn StoreReader>, StoreError> {
        let served = Served { name: serving.name.clone(), build: serving.build.clone() };
        Ok(Arc::new(self.versions.get()?.reader_of(&served)))
    }
}
