//! Apache Kafka as the log: the topic, its partitions and offsets, and a
//! reader per partition.
//!
//! Messages are keyed by request id, so a retry lands in the partition of
//! its original and the partition's own dedup memory sees both
//! ([`message`]). Producers of one topic must partition alike: tally's
//! ingest uses librdkafka's `murmur2_random`, the Java client's default.

pub mod message;
pub mod reader;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::event::salt::UserSalt;

pub use reader::KafkaPartitionReader;

/// How long a metadata or offset request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a metrics scrape waits for one partition's end offset.
pub const END_OFFSETS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a metadata or offset request is retried while the brokers are
/// unavailable or electing leaders (a broker restart), before giving up.
pub const UNAVAILABLE_FOR: Duration = Duration::from_secs(60);

/// Why a topic cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KafkaProblem {
    /// The topic does not fit the job (its partition count): retrying
    /// cannot help.
    #[error("{0}")]
    Config(String),
    /// The brokers did not answer, or not usefully, for [`UNAVAILABLE_FOR`].
    #[error("{0}")]
    Unavailable(String),
}

impl From<KafkaProblem> for String {
    fn from(problem: KafkaProblem) -> String {
        problem.to_string()
    }
}

/// Runs `request` until it succeeds, retrying for [`UNAVAILABLE_FOR`]
/// (a leader election after a broker restart answers `NotLeaderForPartition`
/// for a few seconds).
fn retrying<T>(mut request: impl FnMut() -> Result<T, String>) -> Result<T, KafkaProblem> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match request() {
            Ok(value) => return Ok(value),
            Err(error) if started.elapsed() >= UNAVAILABLE_FOR => {
                return Err(KafkaProblem::Unavailable(format!("{error} (retried for {} s)", UNAVAILABLE_FOR.as_secs())))
            }
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// A topic of clicks and the brokers that hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaTopic {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    pub topic: String,
    pub partitions: u32,
}

/// Settings every tally client of a cluster shares.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers).set("client.id", "tally").set("socket.keepalive.enable", "true");
    config
}

/// A consumer that reads assigned partitions only: no group membership,
/// no offset commits, committed records only. `group` names it for
/// monitoring.
pub fn consumer(brokers: &str, group: &str) -> Result<BaseConsumer, String> {
    client_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "50")
        .create()
        .map_err(|e| format!("kafka consumer for {brokers}: {e}"))
}

impl KafkaTopic {
    /// Creates the topic with the job's partition count if it does not
    /// exist (replication factor: the broker count, at most 3); refuses a
    /// topic with another partition count.
    pub fn ensure(&self) -> Result<(), KafkaProblem> {
        let consumer = consumer(&self.brokers, "tally-admin").map_err(KafkaProblem::Config)?;
        let metadata = retrying(|| {
            consumer
                .fetch_metadata(Some(&self.topic), REQUEST_TIMEOUT)
                .map_err(|e| format!("kafka {}: no answer from the brokers: {e}", self.brokers))
        })?;
        let brokers = metadata.brokers().len().max(1);
        if let Some(found) = metadata.topics().iter().find(|t| t.name() == self.topic && t.error().is_none()) {
            let partitions = found.partitions().len() as u32;
            if partitions != self.partitions {
                return Err(KafkaProblem::Config(format!(
                    "kafka topic {}: it has {partitions} partitions but the job says {} (source.partitions)",
                    self.topic, self.partitions
                )));
            }
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = client_config(&self.brokers)
            .create()
            .map_err(|e| KafkaProblem::Config(format!("kafka admin client for {}: {e}", self.brokers)))?;
        let replication = brokers.min(3) as i32;
        let min_isr = if replication >= 3 { "2" } else { "1" };
        let topic =
            NewTopic::new(&self.topic, self.partitions as i32, TopicReplication::Fixed(replication)).set("min.insync.replicas", min_isr);
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let results =
            retrying(|| block_on(admin.create_topics([&topic], &options)).map_err(|e| format!("kafka topic {}: {e}", self.topic)))?;
        for result in results {
            match result {
                Ok(_) => {
                    tracing::info!("kafka topic {} created: {} partitions, replication factor {replication}", self.topic, self.partitions)
                }
                Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => return self.ensure_exists_as_created(),
                Err((name, code)) => return Err(KafkaProblem::Unavailable(format!("kafka topic {name}: {code}"))),
            }
        }
        Ok(())
    }

    /// Another client created the topic first: check its partition count.
    fn ensure_exists_as_created(&self) -> Result<(), KafkaProblem> {
        let consumer = consumer(&self.brokers, "tally-admin").map_err(KafkaProblem::Config)?;
        // A topic another client has just created may be listed with an
        // error and no partitions until its metadata has settled (`tally
        // up --kafka`: ingest creates it, then the job checks it): ask again.
        let partitions = retrying(|| {
            let metadata =
                consumer.fetch_metadata(Some(&self.topic), REQUEST_TIMEOUT).map_err(|e| format!("kafka {}: {e}", self.brokers))?;
            match metadata.topics().iter().find(|t| t.name() == self.topic) {
                Some(found) if found.error().is_none() && !found.partitions().is_empty() => Ok(found.partitions().len() as u32),
                _ => Err(format!("kafka topic {}: created, but its partitions are not listed yet", self.topic)),
            }
        })?;
        if partitions != self.partitions {
            return Err(KafkaProblem::Config(format!(
                "kafka topic {}: it has {partitions} partitions but the job says {}",
                self.topic, self.partitions
            )));
        }
        Ok(())
    }

    /// The earliest and end offsets of every partition now.
    pub fn bounds(&self) -> Result<(Vec<u64>, Vec<u64>), KafkaProblem> {
        let consumer = consumer(&self.brokers, "tally-admin").map_err(KafkaProblem::Config)?;
        let mut earliest = Vec::with_capacity(self.partitions as usize);
        let mut ends = Vec::with_capacity(self.partitions as usize);
        for partition in 0..self.partitions {
            let (low, high) = retrying(|| {
                consumer
                    .fetch_watermarks(&self.topic, partition as i32, REQUEST_TIMEOUT)
                    .map_err(|e| format!("kafka topic {} partition {partition}: offsets: {e}", self.topic))
            })?;
            earliest.push(low.max(0) as u64);
            ends.push(high.max(0) as u64);
        }
        Ok((earliest, ends))
    }

    /// A reader of every partition's end offset for the metrics: one
    /// consumer kept open, each request bounded by [`END_OFFSETS_TIMEOUT`]
    /// and never retried (`None` when Kafka does not answer in time, so a
    /// scrape never waits long). An end offset counts transaction markers.
    pub fn end_offsets_reader(&self) -> Result<impl Fn() -> Option<Vec<u64>> + Send + Sync + 'static, KafkaProblem> {
        let consumer = consumer(&self.brokers, "tally-metrics").map_err(KafkaProblem::Config)?;
        let (topic, partitions) = (self.topic.clone(), self.partitions);
        Ok(move || {
            (0..partitions)
                .map(|p| consumer.fetch_watermarks(&topic, p as i32, END_OFFSETS_TIMEOUT).ok().map(|(_, high)| high.max(0) as u64))
                .collect()
        })
    }

    /// Per partition, the first offset whose record timestamp is at or
    /// after `time` (the end offset when there is none).
    pub fn offsets_at(&self, time: u64, ends: &[u64]) -> Result<Vec<u64>, KafkaProblem> {
        let consumer = consumer(&self.brokers, "tally-admin").map_err(KafkaProblem::Config)?;
        let mut query = TopicPartitionList::new();
        for partition in 0..self.partitions {
            query
                .add_partition_offset(&self.topic, partition as i32, Offset::Offset(time as i64))
                .map_err(|e| KafkaProblem::Config(format!("kafka topic {}: {e}", self.topic)))?;
        }
        let found = retrying(|| {
            consumer
                .offsets_for_times(query.clone(), REQUEST_TIMEOUT)
                .map_err(|e| format!("kafka topic {}: offsets for a time: {e}", self.topic))
        })?;
        (0..self.partitions)
            .map(|partition| {
                let element = found.find_partition(&self.topic, partition as i32);
                match element.map(|e| (e.offset(), e.error())) {
                    Some((Offset::Offset(offset), Ok(()))) if offset >= 0 => Ok(offset as u64),
                    Some((Offset::End, Ok(()))) | Some((Offset::Invalid, Ok(()))) => Ok(ends[partition as usize]),
                    Some((_, Err(e))) => {
                        Err(KafkaProblem::Unavailable(format!("kafka topic {} partition {partition}: offsets for a time: {e}", self.topic)))
                    }
                    _ => Ok(ends[partition as usize]),
                }
            })
            .collect()
    }

    /// A reader of `partition` from `offset`, up to `end` when bounded.
    pub fn reader(
        &self,
        group: &str,
        partition: u32,
        offset: u64,
        end: Option<u64>,
        salt: UserSalt,
    ) -> Result<KafkaPartitionReader, String> {
        let consumer = consumer(&self.brokers, group)?;
        KafkaPartitionReader::open(consumer, &self.topic, partition, offset, end, salt)
            .map_err(|e| format!("kafka topic {} partition {partition}: {e}", self.topic))
    }
}

/// Runs an admin future to completion on a thread of its own (callers may
/// sit inside a Tokio runtime, where blocking on one is not allowed).
fn block_on<F: std::future::Future + Send>(future: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a Tokio runtime starts");
                runtime.block_on(future)
            })
            .join()
            .expect("the admin thread does not panic")
    })
}
