//! The `file` source: a file of NDJSON click lines, read whole and split
//! into log partitions.
//!
//! Each line is decoded by [`decode_click`] (the click's own rules, its
//! `user_id` hashed there); a bad line is reported with its line number
//! and skipped (SEMANTICS.md, "Inputs"), and a line longer than
//! [`MAX_LINE_BYTES`] is skipped without being kept, so no file can make the
//! reader take unbounded memory. Only I/O errors fail the read.
//!
//! Valid clicks are split into log partitions with
//! [`partition_of`](crate::event::partition_of), keeping file order within a
//! partition, which is the order every per-partition decision depends on.
//!
//! A file (not standard input) is read by up to one thread per worker,
//! each taking at least [`PIECE_BYTES`] and owning the lines that start in
//! its share of the bytes; their partitions are joined in file order and
//! their line numbers counted on from the pieces before, so the result is
//! the one a single reader would make.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::event::json::{decode_click, Rejected, MAX_REJECTED_KEPT};
use crate::event::salt::UserSalt;
use crate::event::validate::ClickError;
use crate::event::{partition_of, Click};
use crate::sources::memory::ClickChunks;

/// Longest line the decoder looks at, in bytes (newline excluded). A valid
/// click is a few hundred bytes even with escapes; the cap bounds the memory
/// a file without newlines can make the reader take.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The least share of a file one reading thread takes, in bytes.
pub const PIECE_BYTES: u64 = 8 << 20;

/// Read buffer of each reading thread, in bytes.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// Rejected lines listed by [`FileInput::report`].
pub const MAX_REJECTED_REPORTED: usize = 10;

/// How many rejected lines a batch run accepts before it refuses the
/// whole input (`--max-rejected`). Each rejected line is reported either
/// way; a refused input runs nothing and writes nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum MaxRejected {
    /// Any number, unless every line is rejected (the default): a file of
    /// only bad lines is the wrong file, not a day with bad lines.
    #[default]
    NotAll,
    /// At most this many lines.
    Lines(u64),
    /// At most this share of the lines (0 ≤ ratio < 1).
    Ratio(f64),
}

impl std::str::FromStr for MaxRejected {
    type Err = String;

    /// `N` (a count of lines) or `RATIO` (a share with a decimal point,
    /// below 1, e.g. `0.01`).
    fn from_str(text: &str) -> Result<MaxRejected, String> {
        if text.contains('.') {
            let ratio: f64 = text.parse().map_err(|_| format!("{text:?} is not a count of lines or a ratio (e.g. 100 or 0.01)"))?;
            if !(0.0..1.0).contains(&ratio) {
                return Err(format!("ratio {text} is not in [0, 1)"));
            }
            return Ok(MaxRejected::Ratio(ratio));
        }
        text.parse().map(MaxRejected::Lines).map_err(|_| format!("{text:?} is not a count of lines or a ratio (e.g. 100 or 0.01)"))
    }
}

impl MaxRejected {
    /// Why `rejected` of `lines` is too many, if it is.
    pub fn check(self, rejected: u64, lines: u64) -> Result<(), String> {
        let refused = match self {
            MaxRejected::NotAll => rejected > 0 && rejected == lines,
            MaxRejected::Lines(max) => rejected > max,
            MaxRejected::Ratio(max) => lines > 0 && rejected as f64 > max * lines as f64,
        };
        if !refused {
            return Ok(());
        }
        Err(match self {
            MaxRejected::NotAll => format!("every line of the input was rejected ({rejected} lines); is it a click file?"),
            MaxRejected::Lines(max) => format!("{rejected} of {lines} lines rejected, more than --max-rejected {max}"),
            MaxRejected::Ratio(max) => format!("{rejected} of {lines} lines rejected, more than --max-rejected {max} of them"),
        })
    }
}

/// A click file, decoded and split into log partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInput {
    /// Valid clicks per partition, in file order.
    pub partitions: Vec<ClickChunks>,
    /// Lines read, blank and rejected ones included.
    pub lines: u64,
    /// The first [`MAX_REJECTED_KEPT`] rejected lines.
    pub rejected: Vec<Rejected>,
    /// All rejected lines.
    pub rejected_total: u64,
}

impl FileInput {
    fn new(partitions: u32) -> FileInput {
        FileInput { partitions: vec![ClickChunks::default(); partitions as usize], lines: 0, rejected: Vec::new(), rejected_total: 0 }
    }

    /// Appends the piece of the file that follows this one: its clicks
    /// after these in every partition, its lines numbered on from these.
    fn append(&mut self, next: FileInput) {
        for (mine, theirs) in self.partitions.iter_mut().zip(next.partitions) {
            mine.append(theirs);
        }
        let room = MAX_REJECTED_KEPT.saturating_sub(self.rejected.len());
        let lines = self.lines;
        self.rejected.extend(next.rejected.into_iter().take(room).map(|r| Rejected { line: r.line + lines, ..r }));
        self.rejected_total += next.rejected_total;
        self.lines += next.lines;
    }

    /// Valid clicks, over all partitions.
    pub fn clicks(&self) -> u64 {
        self.partitions.iter().map(|p| p.len() as u64).sum()
    }

    /// A human summary: counts, then the first rejected lines.
    pub fn report(&self) -> String {
        Report(self).to_string()
    }

    fn push(&mut self, decoded: Result<Click, ClickError>) {
        self.lines += 1;
        match decoded {
            Ok(click) => {
                let partition = partition_of(click.request_id, self.partitions.len() as u32);
                self.partitions[partition as usize].push(click);
            }
            Err(error) => {
                self.rejected_total += 1;
                if self.rejected.len() < MAX_REJECTED_KEPT {
                    self.rejected.push(Rejected { line: self.lines, error });
                }
            }
        }
    }
}

struct Report<'a>(&'a FileInput);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let input = self.0;
        write!(f, "input: {} lines, {} clicks, {} rejected", input.lines, input.clicks(), input.rejected_total)?;
        let shown = input.rejected.iter().take(MAX_REJECTED_REPORTED);
        for rejected in shown.clone() {
            write!(f, "\n  line {}: {}", rejected.line, rejected.error)?;
        }
        let more = input.rejected_total - shown.count() as u64;
        if more > 0 {
            write!(f, "\n  ... and {more} more rejected lines")?;
        }
        Ok(())
    }
}

/// Reads every line of a click file and splits the valid clicks into
/// `partitions` vectors. Only I/O errors fail the read; bad lines are
/// counted and reported in the result.
pub fn read_clicks(mut reader: impl BufRead, partitions: u32, salt: &UserSalt) -> io::Result<FileInput> {
    read_lines(&mut reader, partitions, salt, u64::MAX)
}

/// Reads lines until the end, or until `limit` bytes were read and a line
/// ended: the lines that start within `limit` bytes.
fn read_lines(reader: &mut impl BufRead, partitions: u32, salt: &UserSalt, limit: u64) -> io::Result<FileInput> {
    if partitions == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "partitions must be at least 1"));
    }
    let mut input = FileInput::new(partitions);
    let mut buf = Vec::with_capacity(512);
    let mut read = 0u64;
    while read < limit {
        let (line, bytes) = read_line(reader, &mut buf)?;
        read += bytes;
        let decoded = match line {
            Line::End => break,
            Line::Complete => decode_click(&buf, salt),
            Line::TooLong => Err(ClickError::line(format!("longer than {MAX_LINE_BYTES} bytes"))),
        };
        input.push(decoded);
    }
    Ok(input)
}

/// Reads the file at `path` with up to `threads` threads, one piece of at
/// least `piece_bytes` each: a piece owns the lines that start in its
/// bytes.
fn read_clicks_file(path: &Path, partitions: u32, salt: &UserSalt, threads: usize, piece_bytes: u64) -> io::Result<FileInput> {
    let size = File::open(path)?.metadata()?.len();
    let pieces = (size / piece_bytes.max(1)).clamp(1, threads.max(1) as u64);
    let starts: Vec<u64> = (0..=pieces).map(|i| (u128::from(size) * u128::from(i) / u128::from(pieces)) as u64).collect();
    let read_piece = |(start, end): (u64, u64)| -> io::Result<FileInput> {
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, File::open(path)?);
        let mut skipped = 0;
        if start > 0 {
            // The line that holds byte start - 1 belongs to the piece before.
            reader.seek(SeekFrom::Start(start - 1))?;
            skipped = reader.skip_until(b'\n')? as u64 - 1;
        }
        // The last piece reads to the end, whatever the file has grown to.
        let limit = if end == size { u64::MAX } else { (end - start).saturating_sub(skipped) };
        read_lines(&mut reader, partitions, salt, limit)
    };
    let ranges: Vec<(u64, u64)> = starts.windows(2).map(|w| (w[0], w[1])).collect();
    let (first, rest) = std::thread::scope(|scope| {
        let others: Vec<_> = ranges[1..].iter().map(|&range| scope.spawn(move || read_piece(range))).collect();
        let first = read_piece(ranges[0]);
        let rest: Vec<io::Result<FileInput>> =
            others.into_iter().map(|handle| handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect();
        (first, rest)
    });
    let mut input = first?;
    for piece in rest {
        input.append(piece?);
    }
    Ok(input)
}

enum Line {
    End,
    Complete,
    TooLong,
}

/// Reads one line into `buf`, newline removed, and the bytes it took. A
/// line longer than [`MAX_LINE_BYTES`] is skipped to its end without being
/// kept.
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<(Line, u64)> {
    buf.clear();
    let limit = MAX_LINE_BYTES as u64 + 1;
    let read = io::Read::take(&mut *reader, limit).read_until(b'\n', buf)? as u64;
    if read == 0 {
        return Ok((Line::End, 0));
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok((Line::Complete, read));
    }
    if buf.len() <= MAX_LINE_BYTES {
        return Ok((Line::Complete, read)); // the last line, without a newline
    }
    buf.clear();
    let rest = reader.skip_until(b'\n')? as u64;
    Ok((Line::TooLong, read + rest))
}

/// A click file that could not be read.
#[derive(Debug, Error)]
#[error("cannot read click file {}: {source}", path.display())]
pub struct FileSourceError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// [`read_clicks`] on the file at `path` (`-`: standard input), a file
/// with up to `threads` threads.
pub fn read_clicks_path(path: impl AsRef<Path>, partitions: u32, salt: &UserSalt, threads: usize) -> Result<FileInput, FileSourceError> {
    let path = path.as_ref();
    let with_path = |source| FileSourceError { path: path.to_owned(), source };
    if crate::stdio::is_std(path) {
        let input = crate::stdio::reader(path).map_err(with_path)?;
        return read_clicks(input, partitions, salt).map_err(with_path);
    }
    read_clicks_file(path, partitions, salt, threads, PIECE_BYTES).map_err(with_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn click_line(ad: &str, ts: u64, request_id: u128) -> String {
        let hex = format!("{request_id:032x}");
        let uuid = format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]);
        format!(r#"{{"ad_id":"{ad}","timestamp":{ts},"user_id":"u","request_id":"{uuid}"}}"#)
    }

    #[test]
    fn partition_split_keeps_file_order() {
        let mut text = String::new();
        for i in 0..200u64 {
            text.push_str(&click_line("a", i, u128::from(i % 50) * 0x1_0000_0001));
            text.push('\n');
        }
        let input = read_clicks(text.as_bytes(), 4, &UserSalt::FILE_DEFAULT).unwrap();
        assert_eq!((input.lines, input.clicks(), input.rejected_total), (200, 200, 0));
        for (p, clicks) in input.partitions.iter().enumerate() {
            let times: Vec<u64> = clicks.iter().map(|c| c.ts).collect();
            assert!(times.windows(2).all(|w| w[0] < w[1]), "partition {p} out of order");
            assert!(clicks.iter().all(|c| partition_of(c.request_id, 4) as usize == p));
        }
        assert!(input.partitions.iter().filter(|p| !p.is_empty()).count() > 1);
    }

    #[test]
    fn rejected_lines_are_numbered_and_capped() {
        let mut text = format!("{}\n\n", click_line("a", 1, 1));
        for _ in 0..150 {
            text.push_str("oops\n");
        }
        text.push_str(&click_line("a", 2, 2)); // last line, no newline
        let input = read_clicks(text.as_bytes(), 1, &UserSalt::FILE_DEFAULT).unwrap();
        assert_eq!((input.lines, input.clicks(), input.rejected_total), (153, 2, 151));
        assert_eq!(input.rejected.len(), MAX_REJECTED_KEPT);
        assert_eq!(input.rejected[0].line, 2);
        assert_eq!(input.rejected[0].error.reason, "empty line");
        assert_eq!(input.rejected[1].line, 3);
        let report = input.report();
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines[0], "input: 153 lines, 2 clicks, 151 rejected");
        assert_eq!(lines[1], "  line 2: field 'line': empty line");
        assert!(lines[2].starts_with("  line 3: field 'line': invalid JSON"), "{report}");
        assert_eq!(lines.len(), 1 + MAX_REJECTED_REPORTED + 1);
        assert_eq!(lines[11], "  ... and 141 more rejected lines");
    }

    #[test]
    fn overlong_line_is_rejected_and_skipped() {
        let text = format!("{}\n{}\n{}", "x".repeat(MAX_LINE_BYTES + 10), click_line("a", 1, 1), "y".repeat(MAX_LINE_BYTES + 1));
        let input = read_clicks(text.as_bytes(), 2, &UserSalt::FILE_DEFAULT).unwrap();
        assert_eq!((input.lines, input.clicks(), input.rejected_total), (3, 1, 2));
        assert_eq!(input.rejected[0].error.reason, format!("longer than {MAX_LINE_BYTES} bytes"));
        assert_eq!(input.rejected[1].line, 3);
    }

    #[test]
    fn pieces_read_by_threads_make_what_one_reader_makes() {
        // Bad, blank and overlong lines, so that piece boundaries fall
        // inside every kind of line, and a last line without a newline.
        let mut text = String::new();
        for i in 0..300u64 {
            match i % 37 {
                5 => text.push_str("not json"),
                11 => {}
                23 => text.push_str(&"z".repeat(MAX_LINE_BYTES + 3)),
                _ => text.push_str(&click_line(&format!("ad-{}", i % 7), i, u128::from(i) * 0x9e37_79b9)),
            }
            text.push('\n');
        }
        text.push_str(&click_line("last", 1, 1));
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let one = read_clicks(text.as_bytes(), 3, &UserSalt::FILE_DEFAULT).unwrap();
        assert!(one.rejected_total > 10 && one.clicks() > 250, "{}", one.report());
        let size = text.len() as u64;
        for threads in 1..=5 {
            for piece in [1, 7, 100, size / 4 - 1, size / 3 + 1, size] {
                let pieces = read_clicks_file(file.path(), 3, &UserSalt::FILE_DEFAULT, threads, piece).unwrap();
                assert!(pieces == one, "threads {threads}, piece {piece}: {} against {}", pieces.report(), one.report());
            }
        }
        // The numbering of rejected lines keeps on across pieces, and the
        // cap keeps the first ones.
        let bad = "oops\n".repeat(MAX_REJECTED_KEPT * 2);
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(bad.as_bytes()).unwrap();
        let pieces = read_clicks_file(file.path(), 1, &UserSalt::FILE_DEFAULT, 4, 1).unwrap();
        assert_eq!((pieces.lines, pieces.rejected_total), (bad.lines().count() as u64, bad.lines().count() as u64));
        assert!(pieces.rejected.iter().map(|r| r.line).eq(1..=MAX_REJECTED_KEPT as u64));
    }

    #[test]
    fn zero_partitions_is_an_error() {
        let e = read_clicks(&b""[..], 0, &UserSalt::FILE_DEFAULT).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn read_clicks_path_reads_a_file_and_names_a_missing_one() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "{}", click_line("a", 5, 9)).unwrap();
        let input = read_clicks_path(file.path(), 3, &UserSalt::FILE_DEFAULT, 2).unwrap();
        assert_eq!(input.clicks(), 1);
        let missing = file.path().with_extension("missing");
        let e = read_clicks_path(&missing, 3, &UserSalt::FILE_DEFAULT, 2).unwrap_err();
        assert!(e.to_string().contains(&missing.display().to_string()), "{e}");
    }
}
