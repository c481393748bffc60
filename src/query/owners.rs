//! Which advertiser a row belongs to, by the catalog the job counts with.
//!
//! A click counts under the catalog version valid at its 1m window start
//! (`tally::catalog`), so an ad or a campaign can belong to one advertiser
//! in one window and to another later. An advertiser key sees a row of an
//! ad or a campaign only if that advertiser owns the key for *every* 1m
//! window start in the row's window: a 1h row of an ad that moved half way
//! holds clicks of both advertisers, and is shown to neither (their 1m and
//! the whole 5m rows on either side of the move are). An advertiser row is
//! its advertiser's. Clicks of ads missing from the catalog count under
//! `unknown`, which belongs to nobody but the operator.

use std::collections::HashMap;

use crate::catalog::{Catalog, UNKNOWN};
use crate::event::{Key, KeyType};

const ONE_MINUTE_MS: u64 = 60_000;

/// `[from, until)` of 1m window starts during which a key belongs to
/// `advertiser`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Span {
    from: u64,
    until: u64,
    advertiser: Key,
}

/// The owners of every ad and campaign of one catalog, over time.
#[derive(Debug, Default)]
pub struct Owners {
    ads: HashMap<Key, Vec<Span>>,
    campaigns: HashMap<Key, Vec<Span>>,
}

impl Owners {
    /// The owners by `catalog`; with none, every click counts under
    /// `unknown` and only advertiser rows have an owner.
    pub fn new(catalog: Option<&Catalog>) -> Owners {
        let mut owners = Owners::default();
        for (ad, interval) in catalog.map(Catalog::intervals).unwrap_or_default() {
            if interval.advertiser == UNKNOWN {
                continue;
            }
            let span = Span { from: interval.from, until: interval.until, advertiser: interval.advertiser };
            owners.campaigns.entry(interval.campaign).or_default().push(span.clone());
            owners.ads.entry(ad).or_default().push(span);
        }
        owners
    }

    /// Whether `advertiser` owns the row of `key` for the window
    /// `[start, start + len)`: for every 1m window start in it.
    pub fn owns(&self, advertiser: &str, key_type: KeyType, key: &str, start: u64, len: u64) -> bool {
        let spans = match key_type {
            KeyType::Advertiser => return key == advertiser,
            KeyType::Ad => self.ads.get(key),
            KeyType::Campaign => self.campaigns.get(key),
        };
        let Some(spans) = spans else { return false };
        let end = start.saturating_add(len);
        let mut covered = 0u64;
        for span in spans.iter().filter(|span| minute_starts(span, start, end) > 0) {
            if span.advertiser != advertiser {
                return false;
            }
            covered += minute_starts(span, start, end);
        }
        match key_type {
            // Every minute of an ad's window must be the advertiser's: in a
            // minute no span covers, the ad's clicks count under `unknown`.
            KeyType::Ad => covered == end.div_ceil(ONE_MINUTE_MS) - start.div_ceil(ONE_MINUTE_MS),
            // A campaign has no clicks in a minute none of its ads is in it.
            _ => covered > 0,
        }
    }

    /// Whether `advertiser` owns `key` in any window at all.
    pub fn ever(&self, advertiser: &str, key_type: KeyType, key: &str) -> bool {
        let spans = match key_type {
            KeyType::Advertiser => return key == advertiser,
            KeyType::Ad => self.ads.get(key),
            KeyType::Campaign => self.campaigns.get(key),
        };
        spans.is_some_and(|spans| spans.iter().any(|span| span.advertiser == advertiser && minute_starts(span, 0, u64::MAX) > 0))
    }
}

/// How many 1m window starts in `[start, end)` fall in `span`. Spans of
/// one ad do not overlap, so their counts add up to the minutes covered.
fn minute_starts(span: &Span, start: u64, end: u64) -> u64 {
    let lo = start.max(span.from).div_ceil(ONE_MINUTE_MS);
    let hi = end.min(span.until).div_ceil(ONE_MINUTE_MS);
    hi.saturating_sub(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    fn owners() -> Owners {
        // ad-1 is adv-a's until 00:30, then adv-b's; ad-2 is adv-a's from
        // 01:00 on (unknown before); campaign c-1 has both ads.
        let csv = "ad_id,campaign_id,advertiser_id,valid_from\nad-1,c-1,adv-a,0\nad-1,c-2,adv-b,1800000\nad-2,c-1,adv-a,3600000\n";
        Owners::new(Some(&Catalog::parse(csv).unwrap()))
    }

    #[test]
    fn a_row_is_its_advertisers_only_when_every_minute_is() {
        let o = owners();
        assert!(o.owns("adv-a", KeyType::Ad, "ad-1", 0, 60_000));
        assert!(o.owns("adv-a", KeyType::Ad, "ad-1", 1_740_000, 60_000));
        assert!(!o.owns("adv-a", KeyType::Ad, "ad-1", 1_800_000, 60_000));
        assert!(o.owns("adv-b", KeyType::Ad, "ad-1", 1_800_000, 300_000));
        // The 1h row holds clicks of both: neither sees it.
        assert!(!o.owns("adv-a", KeyType::Ad, "ad-1", 0, H));
        assert!(!o.owns("adv-b", KeyType::Ad, "ad-1", 0, H));
        assert!(o.owns("adv-b", KeyType::Ad, "ad-1", H, H));
        // ad-2 counts under unknown before 01:00.
        assert!(!o.owns("adv-a", KeyType::Ad, "ad-2", 0, H));
        assert!(o.owns("adv-a", KeyType::Ad, "ad-2", H, H));
        assert!(!o.owns("adv-a", KeyType::Ad, "ad-9", 0, 60_000));
        // c-1 is adv-a's throughout (ad-1 until 00:30, ad-2 from 01:00).
        assert!(o.owns("adv-a", KeyType::Campaign, "c-1", 0, 60_000));
        assert!(o.owns("adv-a", KeyType::Campaign, "c-1", 2 * H, H));
        assert!(!o.owns("adv-b", KeyType::Campaign, "c-1", 0, 60_000));
        assert!(o.owns("adv-b", KeyType::Campaign, "c-2", 1_800_000, 60_000));
        assert!(o.owns("adv-a", KeyType::Advertiser, "adv-a", 0, H) && !o.owns("adv-a", KeyType::Advertiser, "adv-b", 0, H));
    }

    #[test]
    fn ever_names_the_keys_an_advertiser_may_ask_for() {
        let o = owners();
        assert!(o.ever("adv-a", KeyType::Ad, "ad-1") && o.ever("adv-b", KeyType::Ad, "ad-1"));
        assert!(!o.ever("adv-b", KeyType::Ad, "ad-2"));
        assert!(!o.ever("adv-a", KeyType::Campaign, "c-2"));
        assert!(!o.ever("adv-a", KeyType::Campaign, UNKNOWN) && !o.ever("adv-a", KeyType::Ad, "nope"));
        assert!(Owners::new(None).ads.is_empty());
    }
}
