//! The replay guard: a signed request is accepted once.
//!
//! A signature is fresh for the replay window around its timestamp, and
//! the job forgets a request id one dedup horizon (of event time) after
//! it; a captured request replayed after the horizon but within the window
//! would be counted again. So every signature that passes is remembered,
//! by its 32-byte MAC, until its signed timestamp leaves the replay window
//! (`timestamp + window`): after that the timestamp check refuses it
//! anyway. A second request with the same MAC is answered `409`.
//!
//! - **When.** A MAC is claimed after it verifies and before anything is
//!   written, so two copies racing each other cannot both pass; it is
//!   released again when the request is then refused (`400`, `413`,
//!   `429`, `503`), so that a client may retry a failed request byte for
//!   byte. A request whose handling stops without an answer (the client
//!   went away during the write) keeps its MAC: whether it was written is
//!   unknown, and remembering is the safe side.
//! - **Bounded memory, failing closed.** At most `replay_guard_entries`
//!   MACs are held, in a hash table of 41-byte slots whose number is a
//!   power of two at least 8/7 of the entries: 86 MB for the default
//!   1,000,000, 43 MB for up to 917,504. When that many are live, a new
//!   signed request is refused with `503` and `Retry-After` rather than an
//!   older MAC forgotten.
//! - **Several ingest processes** (a Kafka log): with `[redis]`
//!   configured, the MACs are kept in Redis instead
//!   (`SET tally:replay:<hex> 1 NX PX <ms until expiry>`), shared by every
//!   process that uses the same Redis. If Redis cannot answer, the request
//!   is refused (`503`, field `redis`): a guard that lets requests through
//!   when it cannot check is no guard. Without `[redis]` each process
//!   guards only itself, and a request replayed to another process is not
//!   caught (`tally ingest --kafka` warns at start). Keys outlive a restart
//!   of ingest, not one of a Redis without persistence.
//! - **Restart.** On a clean stop the live MACs are written to
//!   `DATA/ingest-replay` (temp file, fsync, rename, mode 0600) and read
//!   back at start. While a process runs, `DATA/ingest-replay.running`
//!   exists; finding it at start means the last run did not stop cleanly,
//!   and its MACs are lost. For one replay window after such a start, a
//!   signed request whose timestamp is before the start is refused (`401`,
//!   field `X-Tally-Timestamp`): the process cannot know whether it
//!   accepted it. The client signs it again (a new timestamp), and the
//!   job's dedup drops whatever of it was already written.
//!
//! Signing a request again is always the way to resend it: the new
//! signature is a new request to the guard, and its request ids are what
//! keeps it from being counted twice.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::prefilter::PreFilter;

/// The file the guard is kept in across a clean stop, in the data directory.
pub const STATE_FILE: &str = "ingest-replay";
/// Beside [`STATE_FILE`] while a process runs.
pub const RUNNING_SUFFIX: &str = ".running";
/// The first bytes of [`STATE_FILE`] (and its version).
const MAGIC: &[u8; 8] = b"tallyRG1";
/// Bytes of one entry in [`STATE_FILE`]: the MAC, then its expiry (u64 LE).
const ENTRY_BYTES: usize = 40;
/// Fewest entries held before expired ones are swept out.
const MIN_SWEEP_ENTRIES: usize = 1_024;

/// A MAC as it arrived in the signature header.
pub type Signature = [u8; 32];

/// Why a signed request is not admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its MAC was already accepted; it was signed at `signed_ms`.
    Replayed { signed_ms: u64 },
    /// `entries` MACs are live and none may be forgotten yet.
    Full { entries: usize },
    /// Redis could not answer (`reason`).
    Unavailable(String),
}

/// The MACs in this process, with their expiry (unix ms).
#[derive(Debug, Default)]
struct Memory {
    entries: HashMap<Signature, u64>,
    /// No entry expires before this.
    earliest_expiry_ms: u64,
    /// Sweep expired entries once this many are held.
    sweep_at: usize,
}

impl Memory {
    fn sweep(&mut self, now_ms: u64) {
        self.entries.retain(|_, &mut expiry| expiry > now_ms);
        self.earliest_expiry_ms = self.entries.values().copied().min().unwrap_or(u64::MAX);
        self.sweep_at = (2 * self.entries.len()).max(MIN_SWEEP_ENTRIES);
    }
}

/// Where the guard is kept across restarts, and what the last start found.
#[derive(Debug)]
struct Persisted {
    path: PathBuf,
    /// When this process started after an unclean stop, unix ms.
    unclean_start_ms: Option<u64>,
}

/// Accepts each signature once; `Sync`, shared by all connections.
pub struct ReplayGuard {
    window_ms: u64,
    max_entries: usize,
    memory: Mutex<Memory>,
    shared: Option<Arc<PreFilter>>,
    persisted: OnceLock<Persisted>,
}

impl std::fmt::Debug for ReplayGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayGuard").field("window_ms", &self.window_ms).field("max_entries", &self.max_entries).finish_non_exhaustive()
    }
}

impl ReplayGuard {
    /// A guard for signatures fresh within `window_ms`, holding at most
    /// `max_entries` of them, in this process or (`shared`) in Redis.
    pub fn new(window_ms: u64, max_entries: usize, shared: Option<Arc<PreFilter>>) -> ReplayGuard {
        let memory = Memory { entries: HashMap::new(), earliest_expiry_ms: u64::MAX, sweep_at: MIN_SWEEP_ENTRIES };
        ReplayGuard { window_ms, max_entries, memory: Mutex::new(memory), shared, persisted: OnceLock::new() }
    }

    /// Whether the MACs are shared through Redis.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Claims `mac`, signed at `signed_ms`, at `now_ms`: `Ok` if it was
    /// never accepted (it is remembered from now on), else why not.
    pub async fn claim(&self, mac: Signature, signed_ms: u64, now_ms: u64) -> Result<(), Refusal> {
        let expiry_ms = signed_ms.saturating_add(self.window_ms);
        match &self.shared {
            Some(redis) => {
                let ttl_ms = expiry_ms.saturating_sub(now_ms).max(1);
                match redis.claim_once(&key(&mac), ttl_ms).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(Refusal::Replayed { signed_ms }),
                    Err(reason) => Err(Refusal::Unavailable(reason)),
                }
            }
            None => self.claim_here(mac, expiry_ms, now_ms),
        }
    }

    fn claim_here(&self, mac: Signature, expiry_ms: u64, now_ms: u64) -> Result<(), Refusal> {
        let mut memory = self.memory();
        if memory.entries.get(&mac).is_some_and(|&expiry| expiry > now_ms) {
            return Err(Refusal::Replayed { signed_ms: expiry_ms.saturating_sub(self.window_ms) });
        }
        let full = memory.entries.len() >= self.max_entries;
        if now_ms >= memory.earliest_expiry_ms && (full || memory.entries.len() >= memory.sweep_at) {
            memory.sweep(now_ms);
        }
        if memory.entries.len() >= self.max_entries && !memory.entries.contains_key(&mac) {
            return Err(Refusal::Full { entries: memory.entries.len() });
        }
        memory.entries.insert(mac, expiry_ms);
        memory.earliest_expiry_ms = memory.earliest_expiry_ms.min(expiry_ms);
        Ok(())
    }

    /// Forgets a claimed `mac` whose request was then refused, so that the
    /// same bytes may be sent again. Redis errors leave the key to expire:
    /// the retry is then refused as a replay, and the client signs again.
    pub async fn release(&self, mac: Signature) {
        match &self.shared {
            Some(redis) => redis.release(&key(&mac)).await,
            None => {
                self.memory().entries.remove(&mac);
            }
        }
    }

    /// If this process started after an unclean stop, and `signed_ms` is
    /// before that start: the start (unix ms).
    pub fn signed_before_unclean_start(&self, signed_ms: u64) -> Option<u64> {
        self.persisted.get().and_then(|p| p.unclean_start_ms).filter(|&start| signed_ms < start)
    }

    /// Reads the MACs a clean stop left in `path` and marks the process as
    /// running; if the last run did not stop cleanly, remembers `now_ms`
    /// as an unclean start. Says what it found, for the start-up log. A
    /// guard shared through Redis keeps nothing in files.
    pub fn restore(&self, path: &Path, now_ms: u64) -> Result<String, String> {
        if self.is_shared() {
            return Ok("replay guard: in Redis, shared by the ingest processes that use it".to_owned());
        }
        let marker = running_marker(path);
        let found = if marker.exists() {
            Err("the last run did not stop cleanly".to_owned())
        } else {
            read_state(path, now_ms).map_err(|e| format!("{}: {e}", path.display()))
        };
        let restored = match &found {
            Ok(entries) => {
                let mut memory = self.memory();
                for &(mac, expiry) in entries.iter().take(self.max_entries) {
                    memory.entries.insert(mac, expiry);
                    memory.earliest_expiry_ms = memory.earliest_expiry_ms.min(expiry);
                }
                memory.entries.len()
            }
            Err(_) => 0,
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        write_file(&marker, now_ms.to_string().as_bytes()).map_err(|e| format!("{}: {e}", marker.display()))?;
        let _ = self.persisted.set(Persisted { path: path.to_owned(), unclean_start_ms: found.is_err().then_some(now_ms) });
        Ok(match found {
            Ok(_) => format!("replay guard: {restored} signatures restored from {}", path.display()),
            Err(why) => format!(
                "replay guard: {why}; requests signed before this start are refused for {} (the replay window)",
                crate::config::format_duration(self.window_ms)
            ),
        })
    }

    /// Writes the live MACs where [`ReplayGuard::restore`] read them and
    /// removes the running mark: the next start is a clean one.
    pub fn persist(&self, now_ms: u64) -> Result<usize, String> {
        let Some(persisted) = self.persisted.get() else { return Ok(0) };
        let mut bytes = MAGIC.to_vec();
        let live = {
            let memory = self.memory();
            let mut live = 0;
            for (mac, &expiry) in memory.entries.iter().filter(|(_, &expiry)| expiry > now_ms) {
                bytes.extend_from_slice(mac);
                bytes.extend_from_slice(&expiry.to_le_bytes());
                live += 1;
            }
            live
        };
        let path = &persisted.path;
        write_file(path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let marker = running_marker(path);
        std::fs::remove_file(&marker).map_err(|e| format!("{}: {e}", marker.display()))?;
        Ok(live)
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The Redis key of a MAC.
pub fn key(mac: &Signature) -> String {
    format!("tally:replay:{}", crate::hex::encode(mac))
}

fn running_marker(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(RUNNING_SUFFIX);
    PathBuf::from(name)
}

/// The live entries of a state file; none if there is no file.
fn read_state(path: &Path, now_ms: u64) -> Result<Vec<(Signature, u64)>, String> {
    let mut bytes = Vec::new();
    match std::fs::File::open(path) {
        Ok(mut file) => file.read_to_end(&mut bytes).map_err(|e| e.to_string())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    let Some(entries) = bytes.strip_prefix(MAGIC) else { return Err("not a replay guard file".to_owned()) };
    if entries.len() % ENTRY_BYTES != 0 {
        return Err(format!("{} bytes of entries, not a multiple of {ENTRY_BYTES}", entries.len()));
    }
    let mut live = Vec::with_capacity(entries.len() / ENTRY_BYTES);
    for entry in entries.chunks_exact(ENTRY_BYTES) {
        let (mac, expiry) = entry.split_at(32);
        let (Ok(mac), Ok(expiry)) = (Signature::try_from(mac), <[u8; 8]>::try_from(expiry)) else { continue };
        let expiry = u64::from_le_bytes(expiry);
        if expiry > now_ms {
            live.push((mac, expiry));
        }
    }
    Ok(live)
}

/// Writes `bytes` to `path` atomically: a temp file beside it (mode
/// 0600), fsynced, renamed over it, and the directory fsynced.
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: u64 = 300_000;
    const NOW: u64 = 1_700_000_000_000;

    fn mac(n: u8) -> Signature {
        [n; 32]
    }

    fn claim(guard: &ReplayGuard, mac: Signature, signed: u64, now: u64) -> Result<(), Refusal> {
        guard.claim_here(mac, signed + guard.window_ms, now)
    }

    #[test]
    fn a_signature_is_accepted_once_until_its_timestamp_leaves_the_window() {
        let guard = ReplayGuard::new(WINDOW, 10, None);
        assert_eq!(claim(&guard, mac(1), NOW, NOW), Ok(()));
        assert_eq!(claim(&guard, mac(1), NOW, NOW + 1), Err(Refusal::Replayed { signed_ms: NOW }));
        assert_eq!(claim(&guard, mac(1), NOW, NOW + WINDOW - 1), Err(Refusal::Replayed { signed_ms: NOW }));
        assert_eq!(claim(&guard, mac(2), NOW, NOW), Ok(()));
        // Past the window the timestamp check refuses it; the guard may forget.
        assert_eq!(claim(&guard, mac(1), NOW, NOW + WINDOW), Ok(()));
    }

    #[test]
    fn a_full_guard_refuses_rather_than_forgets_and_sweeps_what_expired() {
        let guard = ReplayGuard::new(WINDOW, 3, None);
        for n in 0..3 {
            claim(&guard, mac(n), NOW + u64::from(n), NOW).unwrap();
        }
        assert_eq!(claim(&guard, mac(9), NOW, NOW + 10), Err(Refusal::Full { entries: 3 }));
        // Every one is still remembered.
        assert_eq!(claim(&guard, mac(0), NOW, NOW + 10), Err(Refusal::Replayed { signed_ms: NOW }));
        // Once the first expires there is room.
        assert_eq!(claim(&guard, mac(9), NOW + 1_000, NOW + WINDOW), Ok(()));
        assert_eq!(guard.memory().entries.len(), 3);
        assert_eq!(claim(&guard, mac(8), NOW + 1_000, NOW + WINDOW), Err(Refusal::Full { entries: 3 }));
    }

    #[tokio::test]
    async fn a_released_signature_may_be_sent_again() {
        let guard = ReplayGuard::new(WINDOW, 10, None);
        guard.claim(mac(1), NOW, NOW).await.unwrap();
        guard.release(mac(1)).await;
        assert_eq!(guard.claim(mac(1), NOW, NOW + 5).await, Ok(()));
        assert_eq!(guard.claim(mac(1), NOW, NOW + 6).await, Err(Refusal::Replayed { signed_ms: NOW }));
    }

    #[test]
    fn a_clean_stop_keeps_the_guard_and_an_unclean_one_refuses_older_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let guard = ReplayGuard::new(WINDOW, 10, None);
        assert!(guard.restore(&path, NOW).unwrap().contains("0 signatures restored"));
        assert_eq!(guard.signed_before_unclean_start(NOW - 1), None);
        claim(&guard, mac(1), NOW, NOW).unwrap();
        claim(&guard, mac(2), NOW - WINDOW, NOW).unwrap();
        assert_eq!(guard.persist(NOW + 1).unwrap(), 1);
        assert!(!running_marker(&path).exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        let restarted = ReplayGuard::new(WINDOW, 10, None);
        assert!(restarted.restore(&path, NOW + 2).unwrap().contains("1 signatures restored"));
        assert_eq!(claim(&restarted, mac(1), NOW, NOW + 3), Err(Refusal::Replayed { signed_ms: NOW }));
        // Killed: the running mark stays, the next start cannot trust the file.
        let after_kill = ReplayGuard::new(WINDOW, 10, None);
        assert!(after_kill.restore(&path, NOW + 4).unwrap().contains("did not stop cleanly"));
        assert_eq!(after_kill.signed_before_unclean_start(NOW + 3), Some(NOW + 4));
        assert_eq!(after_kill.signed_before_unclean_start(NOW + 4), None);
        // A damaged file is no better than none.
        std::fs::write(&path, b"garbage").unwrap();
        std::fs::remove_file(running_marker(&path)).unwrap();
        let damaged = ReplayGuard::new(WINDOW, 10, None);
        assert!(damaged.restore(&path, NOW + 5).unwrap().contains("not a replay guard file"));
        assert_eq!(damaged.signed_before_unclean_start(NOW), Some(NOW + 5));
    }
}
