//! Catalog attribution: ad partials joined with the ad catalog in differential dataflow.
//!
//! The catalog is a differential collection of `(ad, interval)` rows, each
//! interval saying which campaign and advertiser the ad belongs to for 1m
//! windows starting in `[from, until)`. A catalog change therefore applies
//! from its time on, and a partial is attributed by its window, not by when
//! it happens to be processed — the same on every replay and worker count.
//!
//! Partials enter the join as transient updates: `+1` at the time they travel
//! and `-1` one millisecond later. The join's positive output at a time is
//! "this partial joined with the catalog as of now", its arrangements compact
//! to nothing behind the frontier, and memory stays flat. (Data times are
//! multiples of the epoch, at least 10 ms, so a retraction never meets a real
//! partial.) Ads missing from the catalog are found with an antijoin and count
//! under campaign and advertiser `unknown`.
//!
//! A partial enters the join behind an `Arc`, ordered by its identity: the
//! join's sorts, merges and outputs then move and clone a pointer, not the
//! partial with its sketch and late ids (in-process exchange moves records;
//! a cluster's exchange serializes the partial itself).

use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::collection::AsCollection;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::ToStream;
use timely::dataflow::Stream;

use crate::catalog::{CatalogInterval, UNKNOWN};
use crate::event::{EventTime, Key, KeyType};

use super::partial::{AdPartial, Lateness};
use super::window::KeyedPartial;
use crate::telemetry::SourceStats;

/// The join key: an ad with a hash in front, so that the sorts inside the
/// join's arrangements compare one integer instead of two strings.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct AdKey {
    hash: u64,
    ad: Key,
}

impl AdKey {
    fn new(ad: Key) -> AdKey {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(ad.as_str(), &mut hasher);
        AdKey { hash: std::hash::Hasher::finish(&hasher), ad }
    }
}

/// The static part of attribution, shared by all workers of a process.
pub struct Attribution {
    /// Catalog intervals, fed into the dataflow by worker 0.
    pub intervals: Vec<(Key, CatalogInterval)>,
    /// Every ad the catalog knows.
    pub ads: Vec<Key>,
    pub group_by: Vec<KeyType>,
}

/// Attributes ad partials to every key type of the job.
pub fn attribute<'scope>(
    partials: Stream<'scope, EventTime, Vec<(Key, AdPartial)>>,
    attribution: Arc<Attribution>,
    stats: Arc<SourceStats>,
) -> Stream<'scope, EventTime, Vec<KeyedPartial>> {
    let scope = partials.scope();
    let worker_zero = scope.index() == 0;
    let intervals: Vec<_> = if worker_zero { attribution.intervals.clone() } else { Vec::new() };
    let ads: Vec<_> = if worker_zero { attribution.ads.clone() } else { Vec::new() };
    let catalog = intervals
        .into_iter()
        .map(|(ad, interval)| ((AdKey::new(ad), interval), 0, 1isize))
        .to_stream(scope)
        .container::<Vec<_>>()
        .as_collection();
    let known = ads.into_iter().map(|ad| (AdKey::new(ad), 0, 1isize)).to_stream(scope).container::<Vec<_>>().as_collection();

    let entered = partials.unary(Pipeline, "TransientPartials", |_, _| {
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                let Some(&time) = cap.least() else { return };
                let mut session = output.session(&cap);
                for batch in data {
                    session.give_iterator(batch.drain(..).map(|(ad, partial)| ((AdKey::new(ad), Arc::new(partial)), time, 1isize)));
                }
            })
        }
    });
    let entered = entered.container::<Vec<((AdKey, Arc<AdPartial>), EventTime, isize)>>().as_collection();
    let transient = entered.clone().concat(entered.negate().delay(|t| t + 1));

    let known_ads = transient
        .clone()
        .join_map(catalog, |ad, partial, interval| (ad.ad.clone(), partial.clone(), interval.clone()))
        .filter(|(_, partial, interval)| interval.from <= partial.window && partial.window < interval.until)
        .map(|(ad, partial, interval)| (ad, partial, interval.campaign, interval.advertiser));
    // `antijoin` is `self - semijoin`, unconsolidated: consolidate so a known
    // ad's `+1` and `-1` cancel before positives are read off below.
    let unknown_ads = transient.antijoin(known).consolidate().map(|(ad, partial)| (ad.ad, partial, Key::from(UNKNOWN), Key::from(UNKNOWN)));

    known_ads
        .concat(unknown_ads)
        .inner
        .unary(Pipeline, "Attribute", move |_, _| {
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    // Differential records carry their own time, which may be
                    // later than the message's stamp: re-stamp each by its time.
                    let mut by_time: BTreeMap<EventTime, Vec<KeyedPartial>> = BTreeMap::new();
                    for batch in data {
                        for ((ad, partial, campaign, advertiser), time, diff) in batch.drain(..) {
                            if diff <= 0 {
                                continue; // the transient retraction
                            }
                            let out = by_time.entry(time).or_default();
                            if campaign == UNKNOWN && !matches!(partial.lateness, Lateness::Held(_)) {
                                stats.record_unknown(&ad, partial.agg.clicks * diff as u64);
                            }
                            let keys = [(KeyType::Ad, ad), (KeyType::Campaign, campaign), (KeyType::Advertiser, advertiser)];
                            for (key_type, key) in keys {
                                if attribution.group_by.contains(&key_type) {
                                    out.push(keyed(key_type, key, &partial, diff as u64));
                                }
                            }
                        }
                    }
                    for (time, partials) in by_time {
                        let at = cap.delayed(&time, 0);
                        output.session(&at).give_iterator(partials.into_iter());
                    }
                })
            }
        })
        .container::<Vec<KeyedPartial>>()
}

fn keyed(key_type: KeyType, key: Key, partial: &AdPartial, multiplicity: u64) -> KeyedPartial {
    let mut agg = partial.agg.clone();
    agg.clicks *= multiplicity;
    KeyedPartial {
        key_type,
        key,
        window: partial.window,
        lateness: partial.lateness,
        seq: partial.seq,
        agg,
        late_ids: partial.late_ids.clone(),
    }
}
