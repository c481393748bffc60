//! Seeded click generator: the `generator` source and `tally gen`.
//!
//! It produces a click stream that exercises every rule of `SEMANTICS.md`
//! while being reproducible: same seed, same clicks, same bytes, on every
//! platform and forever. That is why it carries its own PRNG (xoshiro256**
//! seeded by SplitMix64) and its own `ln`/`exp` built from correctly rounded
//! IEEE operations only, instead of `rand` or `f64::powf`, whose outputs may
//! change between versions or platforms.
//!
//! What the stream contains, click by click (output position `n`):
//!
//! - **Stream clock.** `stream_time_ms(n) = start_ms + n * 1000 / rate_per_s`.
//!   It never goes backwards; every click's timestamp is at or behind it.
//! - **Ads.** With probability `viral_share` the click goes to `ad-viral`;
//!   otherwise to `ad-<rank-1>` (six digits, `ad-000000` most popular) with
//!   Zipf(`zipf_exponent`) popularity over `ads` ranks, sampled from a
//!   precomputed CDF through a guide table.
//! - **Catalog.** Ad `i` belongs to campaign `cmp-<i mod campaigns>`, campaign
//!   `c` to advertiser `adv-<c mod advertisers>`; `ad-viral` belongs to
//!   `cmp-0000`. Every 97th ad is left out of [`write_catalog`] so that some
//!   clicks land on unknown ads, as with real catalogs.
//! - **Users.** `u-<index>` with `index = min(a, b)` of two uniform draws over
//!   `users`: a mild skew (`u-0` twice the average rate, the last user rarely).
//! - **Out of order.** A click's timestamp is the stream clock minus a uniform
//!   jitter in `0..=jitter_ms`.
//! - **Too late.** A `too_late_share` of fresh clicks is instead stamped
//!   `too_late_by_ms ± too_late_by_ms / 8` behind the stream clock. With the
//!   defaults (120 s ± 15 s) these are beyond allowed lateness for the default
//!   job settings (slack 5 s, lateness 10 s): a click needs to be more than
//!   60 + 10 + 5 s behind its partition's maximum to be too late.
//! - **Partitions.** Position `n` belongs to partition `n mod partitions`
//!   ([`GeneratorConfig::owner`]), whose random stream is its own (seeded by
//!   the seed and the partition): a partition's clicks are made without
//!   making any other partition's. The generator source makes each one in
//!   the worker that reads it ([`PartitionClicks`]); `tally gen` interleaves
//!   them by position ([`Generator`]). Request ids are random v4 UUIDs built
//!   so that [`crate::event::partition_of`] gives their partition.
//! - **Retries.** Each fresh click is, with probability `duplicate_rate`, sent
//!   again 2 to [`MAX_RETRY_DELAY_CLICKS`] positions later (log-uniform), at
//!   its partition's first position from there, byte-identical: same request
//!   id, timestamp, user and ad; one that would come more than
//!   [`MAX_RETRY_DELAY_MS`] of stream time after its original is dropped. So
//!   duplicate lines make up about `duplicate_rate / (1 + duplicate_rate)` of
//!   the output.
//! - **Idle partitions.** Partitions `0..idle_partitions` get no clicks while
//!   the stream clock is in an odd [`IDLE_STRETCH_MS`] stretch since
//!   `start_ms` (30 s on, 30 s off): their positions go to the busy
//!   partitions, in turn.
//!
//! The output has exactly `clicks` lines; retries still pending at the end
//! are not sent.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write};
use std::sync::Arc;

use serde::Deserialize;

use crate::event::{mix64, Click, EventTime, Key, RequestId, MAX_EVENT_TIME_MS, MAX_EVENT_TIME_REASON};

/// Largest accepted `ads`: ad names keep six digits and the Zipf table stays
/// at most 12 MB.
pub const MAX_ADS: u32 = 1_000_000;
/// Latest position, after the original, at which a retry is sent.
pub const MAX_RETRY_DELAY_CLICKS: u64 = 4_096;
/// Latest stream time, after the original, at which a retry is sent: keeps
/// retries inside any sensible dedup horizon even at low `rate_per_s`.
pub const MAX_RETRY_DELAY_MS: u64 = 2_000;
/// Bound of the retries waiting to be sent; beyond it no new retry is
/// scheduled (only reachable with a `duplicate_rate` close to 1).
pub const MAX_PENDING_RETRIES: usize = 2 * MAX_RETRY_DELAY_CLICKS as usize;
/// Length of the alternating on/off stretches of idle partitions, in ms of
/// stream time.
pub const IDLE_STRETCH_MS: u64 = 30_000;
/// Every this-many-th ad (indices 96, 193, …) is missing from the catalog.
pub const CATALOG_GAP_EVERY: u32 = 97;
/// Name of the viral ad.
pub const VIRAL_AD: &str = "ad-viral";
/// Most partitions: request ids are built for their partition from 52
/// random bits times the partition count (see `pick_request_id`).
pub const MAX_PARTITIONS: u32 = 4_096;

/// Settings of the generator, as written under `[source.generator]` in a job
/// file and as flags of `tally gen`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Number of click lines to produce (duplicates and late clicks included).
    pub clicks: u64,
    /// Number of distinct ads (Zipf popularity).
    pub ads: u32,
    /// Campaigns the ads are spread over.
    pub campaigns: u32,
    /// Advertisers the campaigns are spread over.
    pub advertisers: u32,
    /// Distinct users.
    pub users: u64,
    /// Zipf exponent of ad popularity.
    pub zipf_exponent: f64,
    /// Share of clicks that go to the one viral ad (0..1).
    pub viral_share: f64,
    /// Share of clicks that are sent again with the same request id (retries).
    pub duplicate_rate: f64,
    /// Maximum out-of-order jitter of event time, in ms.
    pub jitter_ms: u64,
    /// Share of clicks that arrive beyond allowed lateness.
    pub too_late_share: f64,
    /// How far behind the stream's event time a too-late click is, in ms.
    pub too_late_by_ms: u64,
    /// Partitions of the target log; used to make some partitions idle.
    pub partitions: u32,
    /// Number of partitions that receive no clicks during idle stretches.
    pub idle_partitions: u32,
    /// Event-time rate of the stream, clicks per second.
    pub rate_per_s: u64,
    /// Event time of the first click, ms since the Unix epoch.
    pub start_ms: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 1,
            clicks: 1_000_000,
            ads: 10_000,
            campaigns: 1_000,
            advertisers: 100,
            users: 1_000_000,
            zipf_exponent: 1.1,
            viral_share: 0.4,
            duplicate_rate: 0.02,
            jitter_ms: 3_000,
            too_late_share: 0.001,
            too_late_by_ms: 120_000,
            partitions: 8,
            idle_partitions: 1,
            rate_per_s: 20_000,
            start_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
        }
    }
}

impl GeneratorConfig {
    /// Checks every field; the error names the field and the reason.
    pub fn validate(&self) -> Result<(), String> {
        check_share("viral_share", self.viral_share)?;
        check_share("duplicate_rate", self.duplicate_rate)?;
        check_share("too_late_share", self.too_late_share)?;
        if !(self.zipf_exponent.is_finite() && self.zipf_exponent >= 0.0) {
            return Err(format!("zipf_exponent: must be a finite number >= 0, got {}", self.zipf_exponent));
        }
        if self.ads < 1 || self.ads > MAX_ADS {
            return Err(format!("ads: must be in 1..={MAX_ADS}, got {}", self.ads));
        }
        check_positive("campaigns", u64::from(self.campaigns))?;
        check_positive("advertisers", u64::from(self.advertisers))?;
        check_positive("users", self.users)?;
        check_positive("rate_per_s", self.rate_per_s)?;
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(format!("partitions: must be in 1..={MAX_PARTITIONS}, got {}", self.partitions));
        }
        if self.idle_partitions >= self.partitions {
            return Err(format!("idle_partitions: must be less than partitions ({}), got {}", self.partitions, self.idle_partitions));
        }
        let end_ms = self.clicks.checked_mul(1_000).and_then(|ms| self.start_ms.checked_add(ms / self.rate_per_s));
        if end_ms.is_none_or(|end| end > MAX_EVENT_TIME_MS) {
            return Err(format!(
                "clicks: {} clicks at {}/s from start_ms {} run past the largest event time (timestamps {MAX_EVENT_TIME_REASON})",
                self.clicks, self.rate_per_s, self.start_ms
            ));
        }
        Ok(())
    }

    /// Stream clock at output position `position` (0-based): the event time
    /// the stream has reached, before jitter. Call only on a valid config.
    pub fn stream_time_ms(&self, position: u64) -> EventTime {
        self.start_ms + position * 1_000 / self.rate_per_s
    }

    /// Whether `partition` receives no clicks while the stream clock reads
    /// `stream_ms`: partitions `0..idle_partitions`, during every second
    /// [`IDLE_STRETCH_MS`] stretch after `start_ms`.
    pub fn is_idle(&self, partition: u32, stream_ms: EventTime) -> bool {
        partition < self.idle_partitions && idle_stretch(self.start_ms, stream_ms)
    }

    /// The partition of stream position `n`: `n mod partitions`, except that
    /// an idle partition's position goes to a busy one, in turn by row
    /// (`n / partitions`). Call only on a valid config.
    pub fn owner(&self, n: u64) -> u32 {
        let parts = u64::from(self.partitions);
        let own = (n % parts) as u32;
        if self.is_idle(own, self.stream_time_ms(n)) {
            self.idle_partitions + ((n / parts) % (parts - u64::from(self.idle_partitions))) as u32
        } else {
            own
        }
    }
}

fn idle_stretch(start_ms: u64, stream_ms: u64) -> bool {
    (stream_ms.saturating_sub(start_ms) / IDLE_STRETCH_MS) % 2 == 1
}

fn check_share(field: &str, value: f64) -> Result<(), String> {
    if (0.0..1.0).contains(&value) {
        Ok(())
    } else {
        Err(format!("{field}: must be a share in [0, 1), got {value}"))
    }
}

fn check_positive(field: &str, value: u64) -> Result<(), String> {
    if value >= 1 {
        Ok(())
    } else {
        Err(format!("{field}: must be at least 1, got {value}"))
    }
}

/// One generated click, before it is written as a line or turned into a
/// [`Click`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenClick {
    pub ad: Key,
    pub ts: EventTime,
    pub user_index: u64,
    pub request_id: RequestId,
}

impl GenClick {
    /// The raw user id, `u-<index>`.
    pub fn user_id(&self) -> String {
        format!("u-{}", self.user_index)
    }

    /// The click as a source hands it to the dataflow. The user key is
    /// `mix64(user_index ^ salt)`, a stand-in for the keyed hash of `user_id`
    /// that sources apply to parsed lines.
    pub fn to_click(&self, salt: u64) -> Click {
        Click { ad: self.ad.clone(), ts: self.ts, user: mix64(self.user_index ^ salt), request_id: self.request_id }
    }

    /// Writes the click as one NDJSON line, fields in the order of
    /// `SEMANTICS.md`, request id as a lowercase canonical UUID. `ad` must
    /// already be in the safe charset (it is never escaped). Issues three
    /// small writes: give it a buffered writer.
    pub fn write_ndjson(&self, out: &mut impl Write) -> io::Result<()> {
        const TAIL_MAX: usize = 128;
        let mut tail = [0u8; TAIL_MAX];
        let mut len = 0;
        for part in [
            &b"\",\"timestamp\":"[..],
            decimal(self.ts, &mut [0; 20]),
            b",\"user_id\":\"u-",
            decimal(self.user_index, &mut [0; 20]),
            b"\",\"request_id\":\"",
            &uuid_hex(self.request_id),
            b"\"}\n",
        ] {
            tail[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        }
        out.write_all(b"{\"ad_id\":\"")?;
        out.write_all(self.ad.as_bytes())?;
        out.write_all(&tail[..len])
    }
}

/// `value` in decimal, written at the end of `buf`.
fn decimal(mut value: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buf[start..];
        }
    }
}

/// Canonical `8-4-4-4-12` lowercase form of a UUID.
fn uuid_hex(id: RequestId) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in id.to_be_bytes().into_iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
    out
}

/// Writes the ad catalog as CSV: header `ad_id,campaign_id,advertiser_id`,
/// one line per ad in index order except every [`CATALOG_GAP_EVERY`]-th, then
/// `ad-viral`. Depends on `ads`, `campaigns` and `advertisers` only, not on
/// the seed.
pub fn write_catalog(cfg: &GeneratorConfig, out: &mut impl Write) -> io::Result<()> {
    cfg.validate().map_err(invalid_input)?;
    let mut out = io::BufWriter::new(out);
    writeln!(out, "ad_id,campaign_id,advertiser_id")?;
    for ad in (0..cfg.ads).filter(|ad| ad % CATALOG_GAP_EVERY != CATALOG_GAP_EVERY - 1) {
        let campaign = ad % cfg.campaigns;
        let advertiser = campaign % cfg.advertisers;
        writeln!(out, "{},cmp-{campaign:04},adv-{advertiser:03}", ad_name(ad))?;
    }
    writeln!(out, "{VIRAL_AD},cmp-0000,adv-000")?;
    out.flush()
}

/// Writes all `cfg.clicks` clicks as NDJSON lines through a buffer and
/// returns the number of lines written.
pub fn write_ndjson(cfg: &GeneratorConfig, out: &mut impl Write) -> io::Result<u64> {
    cfg.validate().map_err(invalid_input)?;
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    let mut lines = 0;
    for click in Generator::new(cfg) {
        click.write_ndjson(&mut out)?;
        lines += 1;
    }
    out.flush()?;
    Ok(lines)
}

fn invalid_input(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, reason)
}

/// `ad-<index>` with six digits (`index < MAX_ADS`), built by hand because it
/// runs once per click: a table of names would cost a cache miss instead.
fn ad_name(index: u32) -> Key {
    debug_assert!(index < MAX_ADS);
    let mut name = *b"ad-000000";
    let mut rest = index;
    for digit in name[3..].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    Key::from(std::str::from_utf8(&name).expect("ASCII digits"))
}

/// The whole click stream of a [`GeneratorConfig`], position by position:
/// every partition's clicks interleaved as [`GeneratorConfig::owner`] says.
/// Yields exactly `clicks` items.
pub struct Generator {
    cfg: GeneratorConfig,
    streams: Vec<PartitionStream>,
    position: u64,
}

impl Generator {
    /// # Panics
    /// If `cfg.validate()` fails: validate configs where they are parsed.
    pub fn new(cfg: &GeneratorConfig) -> Generator {
        let shared = Shared::new(cfg);
        let streams = (0..cfg.partitions).map(|p| PartitionStream::new(&shared, p)).collect();
        Generator { cfg: cfg.clone(), streams, position: 0 }
    }
}

impl Iterator for Generator {
    type Item = GenClick;

    fn next(&mut self) -> Option<GenClick> {
        if self.position >= self.cfg.clicks {
            return None;
        }
        let n = self.position;
        self.position += 1;
        Some(self.streams[self.cfg.owner(n) as usize].click_at(n))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.cfg.clicks - self.position).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

/// One partition's clicks, in stream order, made without making any other
/// partition's: the same clicks, in the same order, as the partition's lines
/// in the whole stream of [`Generator`].
pub struct PartitionClicks {
    stream: PartitionStream,
    /// Stream position to look for the partition's next click from.
    from: u64,
}

impl PartitionClicks {
    /// # Panics
    /// If `cfg.validate()` fails, or `partition` is not below `cfg.partitions`.
    pub fn new(cfg: &GeneratorConfig, partition: u32) -> PartitionClicks {
        assert!(partition < cfg.partitions, "partition {partition} of {}", cfg.partitions);
        PartitionClicks { stream: PartitionStream::new(&Shared::new(cfg), partition), from: 0 }
    }
}

impl Iterator for PartitionClicks {
    type Item = GenClick;

    fn next(&mut self) -> Option<GenClick> {
        let n = self.stream.next_owned(self.from)?;
        self.from = n + 1;
        Some(self.stream.click_at(n))
    }
}

/// What every partition's stream reads and never changes.
struct Shared {
    cfg: GeneratorConfig,
    zipf: Arc<ZipfTable>,
}

impl Shared {
    fn new(cfg: &GeneratorConfig) -> Shared {
        if let Err(reason) = cfg.validate() {
            panic!("invalid generator config: {reason}");
        }
        Shared { cfg: cfg.clone(), zipf: Arc::new(ZipfTable::new(cfg.ads, cfg.zipf_exponent)) }
    }
}

/// The random choices of one partition: a PRNG of its own and the retries
/// it owes.
struct PartitionStream {
    cfg: GeneratorConfig,
    partition: u32,
    rng: Xoshiro256StarStar,
    viral: Key,
    zipf: Arc<ZipfTable>,
    viral_below: u64,
    retry_below: u64,
    too_late_below: u64,
    max_retry_delay: u64,
    /// Retries by (due position, original position), soonest first.
    retries: BinaryHeap<Reverse<Retry>>,
}

/// A click to send again once its partition reaches position `due`.
struct Retry {
    due: u64,
    /// Position of the original: unique, so it makes the order total.
    origin: u64,
    click: GenClick,
}

impl Retry {
    fn order_key(&self) -> (u64, u64) {
        (self.due, self.origin)
    }
}

impl PartialEq for Retry {
    fn eq(&self, other: &Self) -> bool {
        self.order_key() == other.order_key()
    }
}

impl Eq for Retry {}

impl PartialOrd for Retry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Retry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order_key().cmp(&other.order_key())
    }
}

impl PartitionStream {
    fn new(shared: &Shared, partition: u32) -> PartitionStream {
        let cfg = &shared.cfg;
        let max_retry_delay =
            (cfg.rate_per_s.saturating_mul(MAX_RETRY_DELAY_MS) / 1_000).clamp(MIN_RETRY_DELAY_CLICKS, MAX_RETRY_DELAY_CLICKS);
        PartitionStream {
            cfg: cfg.clone(),
            partition,
            rng: Xoshiro256StarStar::seeded(mix64(cfg.seed).wrapping_add(u64::from(partition))),
            viral: Key::const_new(VIRAL_AD),
            zipf: Arc::clone(&shared.zipf),
            viral_below: share_threshold(cfg.viral_share),
            retry_below: share_threshold(cfg.duplicate_rate),
            too_late_below: share_threshold(cfg.too_late_share),
            max_retry_delay,
            retries: BinaryHeap::new(),
        }
    }

    /// The click at stream position `n`, which this partition owns; positions
    /// come in increasing order.
    fn click_at(&mut self, n: u64) -> GenClick {
        debug_assert_eq!(self.cfg.owner(n), self.partition);
        let now = self.cfg.stream_time_ms(n);
        while let Some(Reverse(due)) = self.retries.peek() {
            if due.due > n {
                break;
            }
            let Reverse(retry) = self.retries.pop().expect("peeked");
            // A retry held back (its partition was idle) longer than a
            // retry would ever wait is dropped.
            if now - self.cfg.stream_time_ms(retry.origin) <= MAX_RETRY_DELAY_MS {
                return retry.click;
            }
        }
        let click =
            GenClick { ad: self.pick_ad(), user_index: self.pick_user(), ts: self.pick_ts(now), request_id: self.pick_request_id() };
        self.maybe_schedule_retry(&click, n);
        click
    }

    /// The first position from `from` on that this partition owns, if any
    /// is left: in each row of `partitions` positions, its own, and the idle
    /// partitions' when [`GeneratorConfig::owner`] hands them to it.
    fn next_owned(&self, from: u64) -> Option<u64> {
        let parts = u64::from(self.cfg.partitions);
        let (idle, p) = (u64::from(self.cfg.idle_partitions), u64::from(self.partition));
        let mut row = from / parts;
        loop {
            let base = row.checked_mul(parts)?;
            if base >= self.cfg.clicks {
                return None;
            }
            let takes_idle = p >= idle && idle > 0 && idle + row % (parts - idle) == p;
            let candidates = (0..if takes_idle { idle } else { 0 }).map(|q| base + q).chain([base + p]);
            for n in candidates.filter(|&n| n >= from && n < self.cfg.clicks) {
                if self.cfg.owner(n) == self.partition {
                    return Some(n);
                }
            }
            row += 1;
        }
    }

    fn pick_ad(&mut self) -> Key {
        if self.rng.next_u64() < self.viral_below {
            return self.viral.clone();
        }
        // Ad index = rank - 1: `ad-000000` is the most popular.
        ad_name(self.zipf.rank(self.rng.next_u64()) as u32)
    }

    fn pick_user(&mut self) -> u64 {
        let a = self.rng.below(self.cfg.users);
        let b = self.rng.below(self.cfg.users);
        a.min(b)
    }

    fn pick_ts(&mut self, now: EventTime) -> EventTime {
        if self.rng.next_u64() < self.too_late_below {
            let spread = self.cfg.too_late_by_ms / 8;
            let behind = (self.cfg.too_late_by_ms - spread).saturating_add(self.rng.up_to(2 * spread));
            now.saturating_sub(behind)
        } else {
            now.saturating_sub(self.rng.up_to(self.cfg.jitter_ms))
        }
    }

    /// A random version-4 UUID in this partition: `partition_of` folds the
    /// halves to `f` and reduces `mix64(f)` modulo the partitions, so `f` is
    /// chosen as `unmix64` of a random multiple of the partitions plus this
    /// one, the high half at random with its version nibble, and the low half
    /// as `f ^ high`, whose variant bits the high half's top bits set.
    fn pick_request_id(&mut self) -> RequestId {
        // Below 2^52, times at most MAX_PARTITIONS = 2^12: no overflow.
        let multiple = (self.rng.next_u64() >> 12) * u64::from(self.cfg.partitions);
        let folded = unmix64(multiple + u64::from(self.partition));
        let random = self.rng.next_u64() & !(VERSION_MASK | VARIANT_MASK);
        let high = random | VERSION_4 | ((folded ^ VARIANT_RFC4122) & VARIANT_MASK);
        (u128::from(high) << 64) | u128::from(folded ^ high)
    }

    fn maybe_schedule_retry(&mut self, click: &GenClick, n: u64) {
        if self.rng.next_u64() >= self.retry_below || self.retries.len() >= MAX_PENDING_RETRIES {
            return;
        }
        // Log-uniform-ish delay: a uniform draw shifted right by a uniform
        // amount, so short and long retries are both common.
        let span = self.max_retry_delay - MIN_RETRY_DELAY_CLICKS;
        let shift = self.rng.below(u64::from(64 - span.leading_zeros()) + 1);
        let delay = MIN_RETRY_DELAY_CLICKS + (self.rng.up_to(span) >> shift);
        self.retries.push(Reverse(Retry { due: n + delay, origin: n, click: click.clone() }));
    }
}

/// Earliest position, after the original, at which a retry is sent.
const MIN_RETRY_DELAY_CLICKS: u64 = 2;
/// The version nibble of a UUID's high half, and version 4 (random) in it.
const VERSION_MASK: u64 = 0xf << 12;
const VERSION_4: u64 = 0x4 << 12;
/// The variant bits of a UUID's low half, and RFC 4122's (`10`) in them.
const VARIANT_MASK: u64 = 0b11 << 62;
const VARIANT_RFC4122: u64 = 0b10 << 62;

/// The inverse of [`mix64`]: each xor-shift and multiplication undone in
/// reverse order.
fn unmix64(mut z: u64) -> u64 {
    z ^= (z >> 31) ^ (z >> 62);
    z = z.wrapping_mul(0x3196_42b2_d24d_8ec3);
    z ^= (z >> 27) ^ (z >> 54);
    z = z.wrapping_mul(0x96de_1b17_3f11_9089);
    z ^ (z >> 30) ^ (z >> 60)
}

/// `share * 2^64`: a uniform `u64` draw is below it with probability `share`.
fn share_threshold(share: f64) -> u64 {
    debug_assert!((0.0..1.0).contains(&share));
    (share * TWO_POW_64) as u64
}

const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

/// Zipf ranks from uniform draws: the cumulative distribution scaled to
/// `u64`, plus a guide table (Chen & Asau) that narrows the binary search to
/// the few bounds inside the draw's top-bits bucket, so a draw costs a couple
/// of cache misses instead of ~log2(ads) dependent ones.
struct ZipfTable {
    /// `bounds[i]`: draws below it pick rank `i + 1` or better; last is
    /// `u64::MAX`. Rank `r` (1-based) has weight `r^-exponent`.
    bounds: Vec<u64>,
    /// `guide[b]`: first index whose bound exceeds the start of bucket `b`
    /// (the top `log2(guide.len() - 1)` bits of a draw); `guide[last]` is the
    /// last index.
    guide: Vec<u32>,
    bucket_shift: u32,
}

impl ZipfTable {
    fn new(ads: u32, exponent: f64) -> ZipfTable {
        let weights: Vec<f64> = (1..=ads).map(|rank| det_exp(-exponent * det_ln(f64::from(rank)))).collect();
        let total: f64 = weights.iter().sum();
        let mut cumulative = 0.0;
        let mut bounds: Vec<u64> = weights
            .iter()
            .map(|weight| {
                cumulative += weight;
                (cumulative / total * TWO_POW_64) as u64
            })
            .collect();
        *bounds.last_mut().expect("ads >= 1") = u64::MAX;
        let buckets = ads.next_power_of_two().max(2);
        let bucket_shift = 64 - buckets.trailing_zeros();
        let mut guide: Vec<u32> =
            (0..buckets).map(|b| bounds.partition_point(|&bound| bound <= u64::from(b) << bucket_shift) as u32).collect();
        guide.push(ads - 1);
        ZipfTable { bounds, guide, bucket_shift }
    }

    /// The 0-based rank picked by a uniform `draw`.
    fn rank(&self, draw: u64) -> usize {
        let bucket = (draw >> self.bucket_shift) as usize;
        let low = self.guide[bucket] as usize;
        let high = self.guide[bucket + 1] as usize;
        let rank = low + self.bounds[low..=high].partition_point(|&bound| bound <= draw);
        rank.min(self.bounds.len() - 1)
    }
}

/// Natural logarithm of a positive normal `x`, from `+ - * /` only, so it is
/// bit-identical on every IEEE 754 platform (unlike `f64::ln`, whose last
/// bit the standard library leaves to the platform).
fn det_ln(x: f64) -> f64 {
    debug_assert!(x.is_normal() && x > 0.0);
    let bits = x.to_bits();
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut mantissa = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    if mantissa > std::f64::consts::SQRT_2 {
        mantissa /= 2.0;
        exponent += 1;
    }
    // ln m = 2 atanh(t), t = (m-1)/(m+1), |t| <= 0.172: 13 odd terms suffice.
    let t = (mantissa - 1.0) / (mantissa + 1.0);
    let t2 = t * t;
    let mut power = t;
    let mut series = 0.0;
    for k in 0..13 {
        series += power / f64::from(2 * k + 1);
        power *= t2;
    }
    2.0 * series + exponent as f64 * std::f64::consts::LN_2
}

/// `e^y` for `y <= 0` (0 on underflow), bit-identical everywhere like
/// [`det_ln`].
fn det_exp(y: f64) -> f64 {
    debug_assert!(y <= 0.0);
    let k = (y / std::f64::consts::LN_2).round();
    if k < -1022.0 {
        return 0.0;
    }
    // e^r for |r| <= ln2/2 by Taylor series; 18 terms reach f64 precision.
    let r = y - k * std::f64::consts::LN_2;
    let mut term = 1.0;
    let mut sum = 1.0;
    for i in 1..18 {
        term *= r / f64::from(i);
        sum += term;
    }
    sum * f64::from_bits(((k as i64 + 1023) as u64) << 52)
}

/// xoshiro256** 1.0 (Blackman & Vigna, 2018), seeded with four outputs of
/// SplitMix64 as its authors recommend. Small, fast, and fully specified
/// here, so the stream of a seed never changes.
struct Xoshiro256StarStar {
    s: [u64; 4],
}

impl Xoshiro256StarStar {
    fn seeded(seed: u64) -> Self {
        // SplitMix64: a Weyl sequence passed through its finalizer (`mix64`).
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix64(state)
        };
        Xoshiro256StarStar { s: [next(), next(), next(), next()] }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (`n >= 1`) by multiply-high; the bias, at most
    /// `n / 2^64`, is far below anything a test could see.
    fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n >= 1);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `0..=max`.
    fn up_to(&mut self, max: u64) -> u64 {
        ((u128::from(self.next_u64()) * (u128::from(max) + 1)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::partition_of;
    use std::collections::HashMap;

    fn small(seed: u64) -> GeneratorConfig {
        GeneratorConfig { seed, clicks: 200_000, ads: 1_000, rate_per_s: 1_000, ..GeneratorConfig::default() }
    }

    fn ndjson(cfg: &GeneratorConfig) -> Vec<u8> {
        let mut out = Vec::new();
        let lines = write_ndjson(cfg, &mut out).unwrap();
        assert_eq!(lines, cfg.clicks);
        out
    }

    /// FNV-1a, to pin output bytes in a test without storing them.
    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3))
    }

    #[test]
    fn same_seed_gives_identical_bytes() {
        assert_eq!(ndjson(&small(7)), ndjson(&small(7)));
    }

    #[test]
    fn different_seed_gives_different_bytes() {
        assert_ne!(ndjson(&small(7)), ndjson(&small(8)));
    }

    #[test]
    fn seed_1_output_is_frozen() {
        let cfg = GeneratorConfig { clicks: 10_000, ..GeneratorConfig::default() };
        let out = ndjson(&cfg);
        let first = std::str::from_utf8(&out).unwrap().lines().next().unwrap();
        assert_eq!(first, FROZEN_FIRST_LINE);
        assert_eq!(fnv1a(&out), FROZEN_FNV1A, "generator output changed for seed 1");
    }

    const FROZEN_FIRST_LINE: &str = "{\"ad_id\":\"ad-000000\",\"timestamp\":1767225599031,\"user_id\":\"u-7392\",\"request_id\":\"83cb6702-89d0-4e11-8be7-092645f884ed\"}";
    const FROZEN_FNV1A: u64 = 0x24fb_0430_0307_3a90;

    #[test]
    fn lines_are_valid_clicks() {
        let cfg = GeneratorConfig { clicks: 1_000, ..small(3) };
        let out = ndjson(&cfg);
        for (line, click) in std::str::from_utf8(&out).unwrap().lines().zip(Generator::new(&cfg)) {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let fields = value.as_object().unwrap();
            assert_eq!(fields.len(), 4);
            assert_eq!(fields["ad_id"], click.ad.as_str());
            assert_eq!(fields["timestamp"], click.ts);
            assert_eq!(fields["user_id"], click.user_id());
            let uuid = fields["request_id"].as_str().unwrap();
            let hex: String = uuid.split('-').collect();
            assert_eq!(uuid.len(), 36);
            assert_eq!(u128::from_str_radix(&hex, 16).unwrap(), click.request_id);
            assert_eq!(&uuid[14..15], "4", "version nibble");
            assert!(matches!(&uuid[19..20], "8" | "9" | "a" | "b"), "variant");
        }
    }

    #[test]
    fn yields_exactly_clicks_items() {
        for clicks in [0, 1, 2, 5_000] {
            let cfg = GeneratorConfig { clicks, ..small(1) };
            assert_eq!(Generator::new(&cfg).count() as u64, clicks);
        }
    }

    #[test]
    fn viral_share_is_roughly_respected() {
        for share in [0.0, 0.1, 0.4, 0.9] {
            let cfg = GeneratorConfig { viral_share: share, ..small(2) };
            let viral = Generator::new(&cfg).filter(|c| c.ad == VIRAL_AD).count();
            let got = viral as f64 / cfg.clicks as f64;
            assert!((got - share).abs() < 0.01, "share {share}: got {got}");
        }
    }

    #[test]
    fn zipf_puts_top_ranks_first() {
        let cfg = GeneratorConfig { viral_share: 0.0, ..small(2) };
        let mut counts: HashMap<Key, u64> = HashMap::new();
        for click in Generator::new(&cfg) {
            *counts.entry(click.ad).or_default() += 1;
        }
        let top = counts["ad-000000"];
        let second = counts["ad-000001"];
        // Zipf(1.1): rank 1 has 2^1.1 ≈ 2.14 times the weight of rank 2.
        let ratio = top as f64 / second as f64;
        assert!((1.9..2.4).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn duplicates_are_identical_lines_sent_later() {
        let cfg = small(4);
        let out = ndjson(&cfg);
        let lines: Vec<&str> = std::str::from_utf8(&out).unwrap().lines().collect();
        let mut first_seen: HashMap<&str, usize> = HashMap::new();
        let mut duplicates = 0;
        for (position, line) in lines.iter().enumerate() {
            let id = &line[line.len() - 38..line.len() - 2];
            if let Some(&first) = first_seen.get(id) {
                assert_eq!(line, &lines[first]);
                let delay = (position - first) as u64;
                assert!((MIN_RETRY_DELAY_CLICKS..=MAX_RETRY_DELAY_CLICKS + 64).contains(&delay));
                duplicates += 1;
            } else {
                first_seen.insert(id, position);
            }
        }
        let expected = cfg.duplicate_rate / (1.0 + cfg.duplicate_rate);
        let got = duplicates as f64 / cfg.clicks as f64;
        assert!((got - expected).abs() < 0.003, "duplicate share {got}, expected {expected}");
    }

    #[test]
    fn idle_partitions_get_no_clicks_while_idle() {
        let cfg = GeneratorConfig { partitions: 4, idle_partitions: 2, ..small(5) };
        let mut idle_hits = [0u64; 4];
        let mut busy_hits = [0u64; 4];
        for (position, click) in Generator::new(&cfg).enumerate() {
            let partition = partition_of(click.request_id, cfg.partitions);
            let now = cfg.stream_time_ms(position as u64);
            assert!(!cfg.is_idle(partition, now), "click {position} on idle partition {partition}");
            if idle_stretch(cfg.start_ms, now) {
                idle_hits[partition as usize] += 1;
            } else {
                busy_hits[partition as usize] += 1;
            }
        }
        assert_eq!(&idle_hits[..2], &[0, 0]);
        assert!(idle_hits[2..].iter().all(|&n| n > 10_000), "{idle_hits:?}");
        assert!(busy_hits.iter().all(|&n| n > 10_000), "{busy_hits:?}");
    }

    #[test]
    fn too_late_clicks_are_far_behind_the_stream_clock() {
        let cfg = GeneratorConfig { too_late_share: 0.01, ..small(6) };
        let mut late = 0;
        for (position, click) in Generator::new(&cfg).enumerate() {
            let behind = cfg.stream_time_ms(position as u64) - click.ts;
            // Retries of on-time clicks may be up to jitter + 2 s behind.
            if behind > 10_000 {
                assert!(behind >= cfg.too_late_by_ms * 7 / 8, "behind {behind}");
                assert!(behind <= cfg.too_late_by_ms * 9 / 8 + cfg.jitter_ms, "behind {behind}");
                late += 1;
            }
        }
        let got = late as f64 / cfg.clicks as f64;
        assert!((got - 0.01).abs() < 0.002, "too-late share {got}");
    }

    #[test]
    fn unmix64_inverts_mix64() {
        let mut rng = Xoshiro256StarStar::seeded(3);
        for x in [0, 1, u64::MAX].into_iter().chain((0..10_000).map(|_| rng.next_u64())) {
            assert_eq!(mix64(unmix64(x)), x);
            assert_eq!(unmix64(mix64(x)), x);
        }
    }

    #[test]
    fn request_ids_land_in_the_partition_of_their_position() {
        for partitions in [1, 3, 8, MAX_PARTITIONS] {
            let cfg = GeneratorConfig { clicks: 20_000, partitions, idle_partitions: 0, ..small(8) };
            for (n, click) in Generator::new(&cfg).enumerate() {
                assert_eq!(partition_of(click.request_id, partitions), cfg.owner(n as u64), "position {n} of {partitions}");
            }
        }
    }

    #[test]
    fn a_partition_alone_makes_its_lines_of_the_whole_stream() {
        // 200 s of stream time with two idle partitions out of five.
        let cfg = GeneratorConfig { partitions: 5, idle_partitions: 2, ..small(10) };
        let whole: Vec<GenClick> = Generator::new(&cfg).collect();
        let mut total = 0;
        for p in 0..cfg.partitions {
            let mine: Vec<&GenClick> = whole.iter().filter(|c| partition_of(c.request_id, cfg.partitions) == p).collect();
            let alone: Vec<GenClick> = PartitionClicks::new(&cfg, p).collect();
            assert_eq!(alone.iter().collect::<Vec<_>>(), mine, "partition {p}");
            total += alone.len();
        }
        assert_eq!(total as u64, cfg.clicks);
    }

    #[test]
    fn catalog_has_one_line_per_ad_but_every_97th() {
        let cfg = GeneratorConfig { ads: 1_000, ..small(1) };
        let mut out = Vec::new();
        write_catalog(&cfg, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ad_id,campaign_id,advertiser_id");
        assert_eq!(lines.len(), 1 + 1_000 - 10 + 1);
        assert_eq!(lines[1], "ad-000000,cmp-0000,adv-000");
        assert!(!text.contains("ad-000096,"));
        assert_eq!(lines.last(), Some(&"ad-viral,cmp-0000,adv-000"));
    }

    #[test]
    fn validate_names_the_bad_field() {
        let bad = [
            GeneratorConfig { viral_share: 1.0, ..Default::default() },
            GeneratorConfig { duplicate_rate: -0.1, ..Default::default() },
            GeneratorConfig { too_late_share: f64::NAN, ..Default::default() },
            GeneratorConfig { ads: 0, ..Default::default() },
            GeneratorConfig { rate_per_s: 0, ..Default::default() },
            GeneratorConfig { partitions: 0, idle_partitions: 0, ..Default::default() },
            GeneratorConfig { idle_partitions: 8, ..Default::default() },
            GeneratorConfig { clicks: u64::MAX, ..Default::default() },
            GeneratorConfig { start_ms: MAX_EVENT_TIME_MS, clicks: 2_000, rate_per_s: 1_000, ..Default::default() },
        ];
        let fields =
            ["viral_share", "duplicate_rate", "too_late_share", "ads", "rate_per_s", "partitions", "idle_partitions", "clicks", "clicks"];
        for (cfg, field) in bad.iter().zip(fields) {
            let err = cfg.validate().unwrap_err();
            assert!(err.starts_with(&format!("{field}:")), "{err}");
        }
        assert_eq!(GeneratorConfig::default().validate(), Ok(()));
        let last = GeneratorConfig { start_ms: MAX_EVENT_TIME_MS - 1_000, clicks: 1_000, rate_per_s: 1_000, ..Default::default() };
        assert_eq!(last.validate(), Ok(()), "up to the last millisecond of 9999");
    }

    #[test]
    fn zipf_guide_table_matches_plain_binary_search() {
        for ads in [1, 2, 3, 97, 1_000, 4_096, 4_097] {
            let table = ZipfTable::new(ads, 1.1);
            let mut rng = Xoshiro256StarStar::seeded(u64::from(ads));
            let edges = table.bounds.iter().flat_map(|&b| [b.wrapping_sub(1), b]);
            let draws = edges.chain([0, u64::MAX]).chain((0..10_000).map(|_| rng.next_u64()));
            for draw in draws {
                let plain = table.bounds.partition_point(|&bound| bound <= draw);
                assert_eq!(table.rank(draw), plain.min(ads as usize - 1), "ads {ads}, draw {draw}");
            }
        }
    }

    #[test]
    fn deterministic_math_matches_std() {
        for x in [1.0, 2.0, 3.0, 10.0, 12_345.0, 1_000_000.0] {
            assert!((det_ln(x) - f64::ln(x)).abs() < 1e-14 * x.ln().max(1.0), "ln {x}");
        }
        for y in [0.0, -0.5, -1.0, -15.2, -40.0] {
            let want = f64::exp(y);
            assert!((det_exp(y) - want).abs() <= want * 1e-14, "exp {y}");
        }
    }

    #[test]
    fn to_click_keeps_fields_and_hashes_user() {
        let click = Generator::new(&small(9)).next().unwrap();
        let scrubbed = click.to_click(42);
        assert_eq!(scrubbed.ad, click.ad);
        assert_eq!(scrubbed.ts, click.ts);
        assert_eq!(scrubbed.request_id, click.request_id);
        assert_eq!(scrubbed.user, mix64(click.user_index ^ 42));
    }
}
