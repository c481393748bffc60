//! `/v1/late` in pages whose cost is bounded while the store is read.
//!
//! The ledger is read in its own order (window start, key type, key,
//! batch, request id: [`LatePosition`]) from `from`, or from just past the
//! cursor `after`, and the read stops as soon as the page is full: at
//! `limit` entries, at [`MAX_PAGE_REQUEST_IDS`] request ids, or after
//! [`MAX_SCANNED`] records looked at (an advertiser's page skips other
//! advertisers' records, which count too). So one call reads at most
//! about [`MAX_SCANNED`] records, whatever the range holds: a window of a
//! million held clicks is listed over many pages. An entry cut by a page's
//! end continues on the next page (the same window, key, batch and held
//! flag, with the following request ids); a page cut by the scan bound may
//! hold no entry at all. `next` is the cursor of the last record read,
//! `null` once the range is done.

use crate::event::EventTime;
use crate::hex;
use crate::row::LateEntry;
use crate::store::codes::{key_type_code, key_type_of};
use crate::store::read::LateGroups;
use crate::store::{LatePosition, StoreError, StoreSnapshot, Visit};

/// Most request ids listed in one page (about 400 KB of JSON).
pub const MAX_PAGE_REQUEST_IDS: usize = 10_000;
/// Most ledger records one page reads.
pub const MAX_SCANNED: usize = 50_000;

/// One page of the ledger.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// In ledger order, request ids ascending.
    pub entries: Vec<LateEntry>,
    /// Where the next page starts; `None`: the range is done.
    pub next: Option<LatePosition>,
}

/// The page of `[from, to)` after `after`, holding at most `limit`
/// entries of records `keep` takes.
pub fn read_page(
    snapshot: &dyn StoreSnapshot,
    (from, to): (EventTime, EventTime),
    after: Option<&LatePosition>,
    limit: usize,
    keep: &dyn Fn(&LatePosition) -> bool,
) -> Result<Page, StoreError> {
    let limit = limit.max(1);
    let mut groups = LateGroups::default();
    let (mut scanned, mut ids, mut last, mut stopped) = (0, 0, None, false);
    snapshot.late_records(from, to, after, &mut |record| {
        let kept = keep(&record.at);
        let full = scanned >= MAX_SCANNED || (kept && (ids >= MAX_PAGE_REQUEST_IDS || (groups.len() >= limit && !groups.holds(&record))));
        if full {
            stopped = true;
            return Visit::Stop;
        }
        if kept {
            groups.add(&record);
            ids += 1;
        }
        scanned += 1;
        last = Some(record.at);
        Visit::Next
    })?;
    // The first record read always fits, so a stop has a last record.
    Ok(Page { entries: groups.into_entries(), next: if stopped { last } else { None } })
}

/// The cursor of `at`: window start, key type, batch, request id and the
/// key in hex, all URL-safe.
pub fn cursor(at: &LatePosition) -> String {
    format!("{}-{}-{}-{:032x}-{}", at.window_start, key_type_code(at.key_type), at.batch, at.request_id, hex::encode(at.key.as_bytes()))
}

/// The position a [`cursor`] names.
pub fn parse_cursor(text: &str) -> Result<LatePosition, String> {
    let invalid = || format!("{text:?} is not a cursor of this ledger (pass `next` of the previous page as it is)");
    let parts: Vec<&str> = text.splitn(5, '-').collect();
    let [start, code, batch, id, key] = parts[..] else { return Err(invalid()) };
    let number = |s: &str| s.parse::<u64>().map_err(|_| invalid());
    let key_type = code.parse::<u8>().ok().and_then(key_type_of).ok_or_else(invalid)?;
    if id.len() != 32 || key.len() % 2 != 0 || key.len() > 2 * crate::event::validate::MAX_KEY_BYTES {
        return Err(invalid());
    }
    let request_id = u128::from_str_radix(id, 16).map_err(|_| invalid())?;
    let key =
        (0..key.len()).step_by(2).map(|i| u8::from_str_radix(&key[i..i + 2], 16).map_err(|_| invalid())).collect::<Result<Vec<u8>, _>>()?;
    let key = String::from_utf8(key).map_err(|_| invalid())?;
    Ok(LatePosition { window_start: number(start)?, key_type, key: key.into(), batch: number(batch)?, request_id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Key, KeyType};
    use crate::store::{EmbeddedStore, EpochCommit, EpochStore};

    const MINUTE: u64 = 60_000;

    fn entry(key_type: KeyType, key: &str, start: u64, batch: u64, held: bool, ids: std::ops::Range<u128>) -> LateEntry {
        LateEntry { key_type, key: key.into(), window_start: start, batch, held, request_ids: ids.collect() }
    }

    /// A ledger of three windows; window 60 s has an entry of 60,000 ids
    /// (more than a page lists, and more than a page looks at) and entries
    /// of two held flags.
    fn ledger() -> Vec<LateEntry> {
        vec![
            entry(KeyType::Ad, "a", 0, 5_000, false, 1..4),
            entry(KeyType::Ad, "b", 0, 5_000, true, 10..12),
            entry(KeyType::Campaign, "c", 0, 5_000, false, 20..21),
            entry(KeyType::Ad, "a", MINUTE, 5_000, false, 100..60_100),
            entry(KeyType::Ad, "a", MINUTE, 6_000, true, 30..31),
            entry(KeyType::Ad, "b", MINUTE, 6_000, false, 40..45),
            entry(KeyType::Ad, "b", 2 * MINUTE, 6_000, true, 50..52),
        ]
    }

    fn store(ledger: Vec<LateEntry>) -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = EmbeddedStore::open(dir.path()).unwrap();
        store.commit(EpochCommit { epoch: 1, late: ledger, ..EpochCommit::default() }).unwrap();
        (dir, store)
    }

    /// Every page of `[from, to)` from the first on, each through its
    /// cursor printed and parsed, as a client would.
    fn pages(store: &EmbeddedStore, range: (u64, u64), limit: usize, keep: &dyn Fn(&LatePosition) -> bool) -> Vec<Page> {
        let snapshot = store.reader().snapshot().unwrap();
        let mut pages: Vec<Page> = Vec::new();
        let mut after: Option<LatePosition> = None;
        loop {
            let page = read_page(&snapshot, range, after.as_ref(), limit, keep).unwrap();
            after = page.next.as_ref().map(|at| parse_cursor(&cursor(at)).unwrap());
            let done = after.is_none();
            pages.push(page);
            if done {
                return pages;
            }
            assert!(pages.len() < 1_000, "paging does not end");
        }
    }

    /// The pages' entries joined (an entry cut by a page's end is merged
    /// with its continuation), in the ledger's order of the test.
    fn joined(pages: &[Page]) -> Vec<LateEntry> {
        let mut out: Vec<LateEntry> = Vec::new();
        for entry in pages.iter().flat_map(|p| p.entries.iter()) {
            fn same(e: &LateEntry) -> (u64, KeyType, &Key, u64, bool) {
                (e.window_start, e.key_type, &e.key, e.batch, e.held)
            }
            match out.last_mut() {
                Some(last) if same(last) == same(entry) => last.request_ids.extend(&entry.request_ids),
                _ => out.push(entry.clone()),
            }
        }
        out
    }

    #[test]
    fn pages_list_the_whole_ledger_once_within_their_bounds() {
        let (_dir, store) = store(ledger());
        for limit in [1, 2, 3, 1_000] {
            let pages = pages(&store, (0, 3 * MINUTE), limit, &|_| true);
            for page in &pages {
                assert!(page.entries.len() <= limit, "limit {limit}: {} entries", page.entries.len());
                let ids: usize = page.entries.iter().map(|e| e.request_ids.len()).sum();
                assert!(ids <= MAX_PAGE_REQUEST_IDS, "{ids} ids on a page");
            }
            assert_eq!(joined(&pages), ledger(), "limit {limit}");
        }
        // The entry of 60,000 ids takes pages of the most ids a page lists.
        let records: usize = ledger().iter().map(|e| e.request_ids.len()).sum();
        assert_eq!(pages(&store, (0, 3 * MINUTE), 1_000, &|_| true).len(), records.div_ceil(MAX_PAGE_REQUEST_IDS));
        // A range starts and ends at window starts.
        let window = pages(&store, (MINUTE, 2 * MINUTE), 1_000, &|_| true);
        assert_eq!(joined(&window), ledger()[3..6].to_vec());
    }

    #[test]
    fn a_filtered_page_reads_at_most_its_scan_bound_and_may_hold_nothing() {
        let (_dir, store) = store(ledger());
        let later_b = |at: &LatePosition| at.key.as_str() == "b" && at.window_start >= MINUTE;
        let pages = pages(&store, (0, 3 * MINUTE), 1, &later_b);
        let expected: Vec<LateEntry> = ledger().into_iter().filter(|e| e.key == "b" && e.window_start >= MINUTE).collect();
        assert_eq!(joined(&pages), expected);
        // 60,000 records of "a" in a row: a page stops after MAX_SCANNED.
        assert!(pages.iter().any(|p| p.entries.is_empty() && p.next.is_some()));
        let nothing = super::tests::pages(&store, (0, 3 * MINUTE), 1, &|_| false);
        let records: usize = ledger().iter().map(|e| e.request_ids.len()).sum();
        assert_eq!(nothing.len(), records.div_ceil(MAX_SCANNED).max(1), "one page per {MAX_SCANNED} records looked at");
        assert!(nothing.iter().all(|p| p.entries.is_empty()));
    }

    #[test]
    fn a_cursor_reads_back_as_its_position_and_nothing_else_does() {
        let at = LatePosition {
            window_start: 1_800_000_060_000,
            key_type: KeyType::Campaign,
            key: "cmp-7/ü".into(),
            batch: 1_800_000_120_000,
            request_id: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
        };
        let text = cursor(&at);
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "{text}");
        assert_eq!(parse_cursor(&text), Ok(at));
        for bad in [
            "",
            "1-0-2",
            "1-9-2-00000000000000000000000000000000-61",
            "1-0-2-0-61",
            "1-0-2-00000000000000000000000000000000-6",
            "x-0-2-00000000000000000000000000000000-61",
            "1-0-2-00000000000000000000000000000000-ff",
        ] {
            assert!(parse_cursor(bad).is_err(), "{bad:?}");
        }
    }
}
