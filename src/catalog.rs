//! The ad catalog: which campaign and advertiser an ad belongs to, and since
//! when.
//!
//! Clicks carry only an ad id; the catalog is the sole authority for billing
//! attribution (SEMANTICS.md: a client's `campaign_id` is never trusted). An
//! ad can move between campaigns, so each row has a `valid_from` and a click
//! counts under the version valid at its 1m window start. The dataflow joins
//! on [`Catalog::intervals`], which tiles all of time for every ad, so the
//! join never has to ask "is there a version?"; [`Catalog::lookup`] is the
//! same rule for one point, for recounts and tools.
//!
//! The file is a small CSV written by people: `ad_id,campaign_id,advertiser_id[,valid_from]`,
//! with an optional header, `#` comments and blank lines, perhaps saved by
//! a spreadsheet (a UTF-8 byte order mark first, CRLF line ends).
//! `valid_from` is unix milliseconds or an RFC 3339 date-time. Errors name
//! the file, line and column so it can be fixed by hand; a catalog with no
//! ad at all is an error too, since it would silently count every click
//! under `unknown` (run without a catalog for that).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::event::validate::check_key;
use crate::event::Key;
use crate::time::parse_rfc3339;

/// Campaign and advertiser of an ad at a time no catalog version covers.
pub const UNKNOWN: &str = "unknown";

/// Column names, in file order.
const COLUMNS: [&str; 4] = ["ad_id", "campaign_id", "advertiser_id", "valid_from"];

/// Columns every row has; `valid_from` may be left out.
const REQUIRED_COLUMNS: usize = 3;

/// What some editors write at the start of a UTF-8 file.
const BYTE_ORDER_MARK: char = '\u{feff}';

/// A catalog that cannot be used, with where and why.
#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("cannot read catalog {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Row(RowError),
    /// Only a header, comments or blank lines.
    #[error("{}catalog is empty: no ad row, only a header, comments or blank lines", path.as_ref().map_or(String::new(), |p| format!("{}: ", p.display())))]
    Empty { path: Option<PathBuf> },
}

/// A bad row, shown as `ads.csv line 4, column 'valid_from': reason`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub struct RowError {
    /// Known when the catalog came from [`Catalog::load`].
    pub path: Option<PathBuf>,
    /// 1-based.
    pub line: u64,
    /// `None` when the row as a whole is bad.
    pub column: Option<&'static str>,
    pub reason: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.path {
            write!(f, "{} ", path.display())?;
        }
        write!(f, "line {}", self.line)?;
        if let Some(column) = self.column {
            write!(f, ", column '{column}'")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl CatalogError {
    fn row(line: u64, column: Option<&'static str>, reason: impl Into<String>) -> CatalogError {
        CatalogError::Row(RowError { path: None, line, column, reason: reason.into() })
    }

    fn with_path(self, file: &Path) -> CatalogError {
        match self {
            CatalogError::Row(row) => CatalogError::Row(RowError { path: Some(file.to_owned()), ..row }),
            CatalogError::Empty { .. } => CatalogError::Empty { path: Some(file.to_owned()) },
            io => io,
        }
    }
}

/// Where a version of an ad belongs while the ad has it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Version {
    valid_from: u64,
    campaign: Key,
    advertiser: Key,
    /// Kept to point at both rows of an ambiguous pair.
    line: u64,
}

/// The time span `[from, until)` (ms, compared with a 1m window start) during
/// which an ad belongs to `campaign` and `advertiser`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CatalogInterval {
    pub from: u64,
    pub until: u64,
    pub campaign: Key,
    pub advertiser: Key,
}

/// The versions of every ad, sorted by `valid_from` (distinct per ad).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    ads: BTreeMap<Key, Vec<Version>>,
}

impl Catalog {
    /// Parses catalog CSV text; errors carry no path.
    pub fn parse(text: &str) -> Result<Catalog, CatalogError> {
        let text = text.strip_prefix(BYTE_ORDER_MARK).unwrap_or(text);
        let mut ads: BTreeMap<Key, Vec<Version>> = BTreeMap::new();
        let mut first_row = true;
        for (index, raw) in text.lines().enumerate() {
            let line = index as u64 + 1;
            let row = raw.trim_ascii();
            if row.is_empty() || row.starts_with('#') {
                continue;
            }
            let is_header = first_row && cell(row, 0) == COLUMNS[0];
            first_row = false;
            if is_header {
                check_header(row, line)?;
            } else {
                let (ad, version) = parse_row(row, line)?;
                ads.entry(ad).or_default().push(version);
            }
        }
        if ads.is_empty() {
            return Err(CatalogError::Empty { path: None });
        }
        for (ad, versions) in &mut ads {
            sort_versions(ad, versions)?;
        }
        Ok(Catalog { ads })
    }

    /// Reads and parses the catalog file at `path`; errors name the path.
    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        Catalog::load_with_bytes(path).map(|(catalog, _)| catalog)
    }

    /// [`Catalog::load`], with the bytes it was parsed from (read once, so
    /// that a fingerprint of them is the catalog's).
    pub fn load_with_bytes(path: &Path) -> Result<(Catalog, Vec<u8>), CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Io { path: path.to_owned(), source })?;
        let catalog = Catalog::parse(&text).map_err(|e| e.with_path(path))?;
        Ok((catalog, text.into_bytes()))
    }

    /// Every version of every ad, in ad and `valid_from` order: `(ad,
    /// valid_from, campaign, advertiser)`.
    pub fn versions(&self) -> impl Iterator<Item = (&Key, u64, &Key, &Key)> {
        self.ads.iter().flat_map(|(ad, versions)| versions.iter().map(move |v| (ad, v.valid_from, &v.campaign, &v.advertiser)))
    }

    /// Number of distinct ads.
    pub fn len_ads(&self) -> usize {
        self.ads.len()
    }

    /// For every ad (in id order), consecutive intervals covering
    /// `[0, u64::MAX)`: one per version, the last one open-ended, preceded by
    /// an [`UNKNOWN`] interval if the first version starts after 0.
    pub fn intervals(&self) -> Vec<(Key, CatalogInterval)> {
        let mut out = Vec::new();
        for (ad, versions) in &self.ads {
            out.extend(ad_intervals(versions).map(|interval| (ad.clone(), interval)));
        }
        out
    }

    /// Campaign and advertiser of `ad` for the 1m window starting at
    /// `window_start`: the latest version with `valid_from <= window_start`.
    /// `None` if the ad is not in the catalog or has no version yet (the
    /// click then counts under [`UNKNOWN`]).
    pub fn lookup(&self, ad: &str, window_start: u64) -> Option<(&Key, &Key)> {
        let versions = self.ads.get(ad)?;
        let after = versions.partition_point(|v| v.valid_from <= window_start);
        let version = versions.get(after.checked_sub(1)?)?;
        Some((&version.campaign, &version.advertiser))
    }
}

fn ad_intervals(versions: &[Version]) -> impl Iterator<Item = CatalogInterval> + '_ {
    let first_from = versions.first().map_or(u64::MAX, |v| v.valid_from);
    let unknown = (first_from > 0).then(|| CatalogInterval {
        from: 0,
        until: first_from,
        campaign: Key::const_new(UNKNOWN),
        advertiser: Key::const_new(UNKNOWN),
    });
    let known = versions.iter().enumerate().map(|(i, v)| CatalogInterval {
        from: v.valid_from,
        until: versions.get(i + 1).map_or(u64::MAX, |next| next.valid_from),
        campaign: v.campaign.clone(),
        advertiser: v.advertiser.clone(),
    });
    unknown.into_iter().chain(known)
}

/// Sorts by `valid_from`; two versions from the same time are ambiguous.
fn sort_versions(ad: &Key, versions: &mut [Version]) -> Result<(), CatalogError> {
    versions.sort_by_key(|v| (v.valid_from, v.line));
    match versions.windows(2).find(|pair| pair[0].valid_from == pair[1].valid_from) {
        Some(pair) => Err(CatalogError::row(
            pair[1].line,
            Some(COLUMNS[3]),
            format!("ad '{ad}' already has a version valid from {} (line {})", pair[0].valid_from, pair[0].line),
        )),
        None => Ok(()),
    }
}

/// The `index`th cell of a row, trimmed; empty if the row is shorter.
fn cell(row: &str, index: usize) -> &str {
    row.split(',').nth(index).unwrap_or("").trim_ascii()
}

/// The header names the columns in file order: the required ones, and
/// `valid_from` if the rows have it.
fn check_header(row: &str, line: u64) -> Result<(), CatalogError> {
    let cells = cells(row, line)?;
    for (&column, &name) in COLUMNS.iter().zip(&cells) {
        if name != column {
            return Err(CatalogError::row(line, Some(column), format!("the header names {name:?} here; expected {}", COLUMNS.join(","))));
        }
    }
    Ok(())
}

/// The trimmed cells of a row: 3 or 4. A short row is refused naming the
/// first missing column.
fn cells(row: &str, line: u64) -> Result<Vec<&str>, CatalogError> {
    let cells: Vec<&str> = row.split(',').map(str::trim_ascii).collect();
    if cells.len() < REQUIRED_COLUMNS {
        let missing = COLUMNS[cells.len()];
        return Err(CatalogError::row(
            line,
            Some(missing),
            format!("missing; the columns are {}[,{}]", COLUMNS[..3].join(","), COLUMNS[3]),
        ));
    }
    if cells.len() > COLUMNS.len() {
        return Err(CatalogError::row(
            line,
            None,
            format!("expected 3 or 4 cells ({}[,{}]), got {}", COLUMNS[..3].join(","), COLUMNS[3], cells.len()),
        ));
    }
    Ok(cells)
}

fn parse_row(row: &str, line: u64) -> Result<(Key, Version), CatalogError> {
    let cells = cells(row, line)?;
    let id = |column: usize| parse_id(cells[column], line, COLUMNS[column]);
    let ad = id(0)?;
    let version =
        Version { campaign: id(1)?, advertiser: id(2)?, valid_from: parse_valid_from(cells.get(3).copied().unwrap_or(""), line)?, line };
    Ok((ad, version))
}

fn parse_id(cell: &str, line: u64, column: &'static str) -> Result<Key, CatalogError> {
    check_key(cell).map_err(|e| CatalogError::row(line, Some(column), format!("{e}: {cell:?}")))?;
    Ok(Key::from(cell))
}

/// Ms since the Unix epoch, digits only (no sign), or an RFC 3339
/// date-time at or after 1970 (`2026-12-07T10:00:00Z`, `…+01:00`); empty
/// means 0.
fn parse_valid_from(cell: &str, line: u64) -> Result<u64, CatalogError> {
    let error = |reason: String| CatalogError::row(line, Some(COLUMNS[3]), reason);
    if cell.is_empty() {
        return Ok(0);
    }
    if cell.bytes().all(|b| b.is_ascii_digit()) {
        return cell.parse().map_err(|_| error(format!("out of range (max {}): {cell:?}", u64::MAX)));
    }
    parse_rfc3339(cell)
        .ok_or_else(|| error(format!("neither ms since the Unix epoch nor an RFC 3339 date-time (e.g. 2026-12-07T10:00:00Z): {cell:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Catalog {
        match Catalog::parse(text) {
            Ok(catalog) => catalog,
            Err(e) => panic!("{e}"),
        }
    }

    fn error(text: &str) -> String {
        match Catalog::parse(text) {
            Ok(catalog) => panic!("accepted {text:?} as {catalog:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn interval(from: u64, until: u64, campaign: &str, advertiser: &str) -> CatalogInterval {
        CatalogInterval { from, until, campaign: campaign.into(), advertiser: advertiser.into() }
    }

    #[test]
    fn parses_header_comments_blanks_whitespace_and_crlf() {
        let catalog = parse(
            "ad_id,campaign_id,advertiser_id,valid_from\r\n# moved in March\n\n \
             a1 , c1 ,adv1\r\na1,c2,adv1, 1000 \na2,c3,adv2,\n",
        );
        assert_eq!(catalog.len_ads(), 2);
        assert_eq!(catalog.lookup("a1", 0), Some((&"c1".into(), &"adv1".into())));
        assert_eq!(catalog.lookup("a1", 1000), Some((&"c2".into(), &"adv1".into())));
        assert_eq!(catalog.lookup("a2", 5), Some((&"c3".into(), &"adv2".into())));
    }

    #[test]
    fn header_is_only_skipped_as_first_row() {
        assert_eq!(parse("ad_id,campaign_id,advertiser_id\na1,c1,x\n").len_ads(), 1);
        let e = error("a1,c1,x\nad_id,campaign_id,advertiser_id,valid_from\n");
        assert!(e.starts_with("line 2, column 'valid_from': neither ms since the Unix epoch nor an RFC 3339 date-time"), "{e}");
    }

    #[test]
    fn a_byte_order_mark_first_is_skipped() {
        let catalog = parse("\u{feff}ad_id,campaign_id,advertiser_id\r\na1,c1,x\r\n");
        assert_eq!(catalog.lookup("a1", 0), Some((&"c1".into(), &"x".into())));
        assert_eq!(parse("\u{feff}a1,c1,x\n").lookup("a1", 0), Some((&"c1".into(), &"x".into())));
        assert!(error("a1,c1,x\n\u{feff}a2,c1,x\n").starts_with("line 2, column 'ad_id'"), "only at the start of the file");
    }

    #[test]
    fn a_catalog_without_ads_is_empty_and_refused() {
        for text in [
            "",
            "\u{feff}",
            "# nothing yet\n\n",
            "ad_id,campaign_id,advertiser_id\n",
            "ad_id,campaign_id,advertiser_id,valid_from\n# soon\n",
        ] {
            assert_eq!(error(text), "catalog is empty: no ad row, only a header, comments or blank lines", "{text:?}");
        }
    }

    #[test]
    fn a_missing_column_is_named_in_rows_and_in_the_header() {
        assert_eq!(
            error("a1,c1\n"),
            "line 1, column 'advertiser_id': missing; the columns are ad_id,campaign_id,advertiser_id[,valid_from]"
        );
        assert_eq!(
            error("a1,c1,x\n\na2\n"),
            "line 3, column 'campaign_id': missing; the columns are ad_id,campaign_id,advertiser_id[,valid_from]"
        );
        assert_eq!(
            error("ad_id,campaign_id\na1,c1,x\n"),
            "line 1, column 'advertiser_id': missing; the columns are ad_id,campaign_id,advertiser_id[,valid_from]"
        );
        assert_eq!(
            error("ad_id,advertiser_id,campaign_id\na1,c1,x\n"),
            "line 1, column 'campaign_id': the header names \"advertiser_id\" here; expected ad_id,campaign_id,advertiser_id,valid_from"
        );
    }

    #[test]
    fn valid_from_takes_rfc3339_as_well_as_unix_ms() {
        // date -u -d 2026-12-07T10:00:00Z +%s → 1796637600
        let catalog = parse("a,c1,x,2026-12-07T10:00:00Z\na,c2,x,2026-12-07T12:00:00+01:00\na,c3,x,1796648400000\n");
        assert_eq!(
            catalog.versions().map(|(_, from, ..)| from).collect::<Vec<_>>(),
            [1_796_637_600_000, 1_796_641_200_000, 1_796_648_400_000]
        );
        assert_eq!(catalog.lookup("a", 1_796_641_200_000), Some((&"c2".into(), &"x".into())));
        assert!(error("a,c1,x,2026-12-07\n").contains("nor an RFC 3339 date-time (e.g. 2026-12-07T10:00:00Z): \"2026-12-07\""));
        assert!(error("a,c1,x,1969-12-31T23:59:59Z\n").starts_with("line 1, column 'valid_from'"));
        // The same instant twice, spelled two ways, is ambiguous.
        assert!(error("a,c1,x,2026-12-07T10:00:00Z\na,c2,x,1796637600000\n")
            .contains("already has a version valid from 1796637600000 (line 1)"));
    }

    #[test]
    fn row_errors_name_line_and_column() {
        let not_a_time = "neither ms since the Unix epoch nor an RFC 3339 date-time (e.g. 2026-12-07T10:00:00Z)";
        assert_eq!(error("a1,c1,x\n\n# c\na2,c1,x,abc\n"), format!("line 4, column 'valid_from': {not_a_time}: \"abc\""));
        assert_eq!(error("a1,c1,x,-5"), format!("line 1, column 'valid_from': {not_a_time}: \"-5\""));
        assert_eq!(error("a1,c1,x,+5"), format!("line 1, column 'valid_from': {not_a_time}: \"+5\""));
        assert_eq!(error("a1,c1,x,1.5"), format!("line 1, column 'valid_from': {not_a_time}: \"1.5\""));
        assert!(error("a1,c1,x,18446744073709551616").contains("out of range"));
        assert_eq!(error("a1,,x"), "line 1, column 'campaign_id': empty: \"\"");
        assert_eq!(error("a 1,c1,x"), "line 1, column 'ad_id': invalid character ' ' at byte 1 (allowed: A-Z a-z 0-9 . _ : -): \"a 1\"");
        let long = format!("a1,c1,{}", "x".repeat(65));
        assert!(error(&long).starts_with("line 1, column 'advertiser_id': too long: 65 bytes"));
        assert!(error("a1,c1").starts_with("line 1, column 'advertiser_id': missing"));
        assert!(error("a1,c1,x,0,extra").ends_with("got 5"));
        assert!(error("\"a1\",c1,x").contains("column 'ad_id'"), "no quoting");
    }

    #[test]
    fn same_ad_and_valid_from_twice_is_ambiguous() {
        assert_eq!(
            error("a1,c1,x,5\na1,c2,x,6\na1,c3,x,5\n"),
            "line 3, column 'valid_from': ad 'a1' already has a version valid from 5 (line 1)"
        );
        assert!(error("a1,c1,x\na1,c2,x,0\n").starts_with("line 2"), "empty means 0");
    }

    #[test]
    fn intervals_tile_all_time_per_ad() {
        let catalog = parse("b,cb,x,0\na,c2,y,2000\na,c1,x,1000\n");
        assert_eq!(
            catalog.intervals(),
            vec![
                ("a".into(), interval(0, 1000, UNKNOWN, UNKNOWN)),
                ("a".into(), interval(1000, 2000, "c1", "x")),
                ("a".into(), interval(2000, u64::MAX, "c2", "y")),
                ("b".into(), interval(0, u64::MAX, "cb", "x")),
            ]
        );
    }

    #[test]
    fn lookup_takes_latest_version_at_window_start() {
        let catalog = parse("a,c1,x,1000\na,c2,y,2000\n");
        assert_eq!(catalog.lookup("a", 999), None);
        assert_eq!(catalog.lookup("a", 1000), Some((&"c1".into(), &"x".into())));
        assert_eq!(catalog.lookup("a", 1999), Some((&"c1".into(), &"x".into())));
        assert_eq!(catalog.lookup("a", 2000), Some((&"c2".into(), &"y".into())));
        assert_eq!(catalog.lookup("a", u64::MAX), Some((&"c2".into(), &"y".into())));
        assert_eq!(catalog.lookup("b", 5000), None);
    }

    #[test]
    fn lookup_agrees_with_intervals() {
        let catalog = parse("a,c1,x,60000\na,c2,y,120000\na,c3,y,600000\n");
        for (ad, iv) in catalog.intervals() {
            for t in [iv.from, iv.until - 1, iv.from + (iv.until - iv.from) / 2] {
                let expected = (iv.campaign != UNKNOWN).then_some((&iv.campaign, &iv.advertiser));
                assert_eq!(catalog.lookup(&ad, t), expected, "t = {t}");
            }
        }
    }

    #[test]
    fn load_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ads.csv");
        std::fs::write(&path, "a1,c1,x\na2,c1,x,abc\n").unwrap();
        let e = Catalog::load(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{} line 2, column 'valid_from': neither ms", path.display())), "{e}");
        std::fs::write(&path, "ad_id,campaign_id\n").unwrap();
        let e = Catalog::load(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{} line 1, column 'advertiser_id': missing", path.display())), "{e}");
        std::fs::write(&path, "\u{feff}ad_id,campaign_id,advertiser_id\r\n").unwrap();
        assert_eq!(
            Catalog::load(&path).unwrap_err().to_string(),
            format!("{}: catalog is empty: no ad row, only a header, comments or blank lines", path.display())
        );
        std::fs::write(&path, "a1,c1,x\n").unwrap();
        assert_eq!(Catalog::load(&path).unwrap().len_ads(), 1);
        let missing = dir.path().join("nope.csv");
        let e = Catalog::load(&missing).unwrap_err().to_string();
        assert!(e.starts_with(&format!("cannot read catalog {}: ", missing.display())), "{e}");
    }
}
