//! One Kafka partition as a [`PartitionReader`].
//!
//! Each reader has its own consumer with the partition statically assigned
//! at an offset (`assign`: no consumer group rebalancing, no offset commits;
//! the job's offsets live in its epoch commits). It reads committed records
//! only (`isolation.level=read_committed`). Offsets that hold no click (a
//! transaction marker, a record that is not a click) are skipped, and every
//! batch it returns sits at consecutive offsets, so the source knows every
//! click's offset ([`PartitionReader::position`]).
//!
//! A partition is caught up when its position reached the high watermark
//! the consumer last saw, never by a timer. A record that cannot be read at
//! all (its offset deleted by retention) stops the job: skipping it would
//! lose clicks, so the worker panics with the partition and offset and the
//! cluster fails as a whole (fail-stop).

use std::ffi::CString;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::dataflow::{PartitionReader, ReadStatus};
use crate::event::salt::UserSalt;
use crate::event::validate::ClickError;
use crate::event::Click;

use super::message;

/// How long a read waits for a fetch when the partition has unread records.
const FETCH_WAIT: Duration = Duration::from_millis(5);
/// Records that are not clicks reported per partition; the rest are counted.
const MAX_REPORTED: u64 = 10;

/// Reads one partition from an offset, up to `end` when bounded.
pub struct KafkaPartitionReader {
    consumer: BaseConsumer,
    topic: String,
    c_topic: CString,
    partition: i32,
    salt: UserSalt,
    position: u64,
    end: Option<u64>,
    stop: Option<u64>,
    peeked: Option<(u64, Result<Click, ClickError>)>,
    skipped: u64,
}

impl KafkaPartitionReader {
    /// Assigns `partition` of `topic` to `consumer` at `offset`.
    pub fn open(
        consumer: BaseConsumer,
        topic: &str,
        partition: u32,
        offset: u64,
        end: Option<u64>,
        salt: UserSalt,
    ) -> Result<Self, KafkaError> {
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, partition as i32, Offset::Offset(offset as i64))?;
        consumer.assign(&assignment)?;
        Ok(KafkaPartitionReader {
            consumer,
            topic: topic.to_owned(),
            c_topic: CString::new(topic).map_err(|_| KafkaError::ClientCreation(format!("topic {topic:?} has a NUL byte")))?,
            partition: partition as i32,
            salt,
            position: offset,
            end,
            stop: None,
            peeked: None,
            skipped: 0,
        })
    }

    /// The next record: the one held back by the last read, or a new one.
    fn next(&mut self, wait: Duration) -> Option<(u64, Result<Click, ClickError>)> {
        if let Some(record) = self.peeked.take() {
            return Some(record);
        }
        match self.consumer.poll(wait)? {
            Ok(record) => {
                let offset = record.offset() as u64;
                let click = match record.payload() {
                    Some(value) => message::decode(value, &self.salt),
                    None => Err(ClickError { field: "message".into(), reason: "no value".into() }),
                };
                Some((offset, click))
            }
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange)) => panic!(
                "kafka topic {} partition {} at offset {}: the offset is not in Kafka any more (retention deleted it?): the job cannot read on without losing clicks",
                self.topic, self.partition, self.position
            ),
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::PartitionEOF)) => None,
            Err(error) => {
                tracing::warn!("kafka topic {} partition {}: {error}", self.topic, self.partition);
                None
            }
        }
    }

    /// The high watermark the consumer saw last (the last stable offset
    /// under read_committed), without asking a broker.
    fn cached_high_watermark(&self) -> Option<u64> {
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the client pointer lives as long as `self.consumer`, the
        // topic is a NUL-terminated string, and librdkafka only writes the
        // two integers.
        let code = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                self.c_topic.as_ptr(),
                self.partition,
                &mut low,
                &mut high,
            )
        };
        (code == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high as u64)
    }

    /// The consumer's own position: past records it never handed out
    /// (transaction markers, aborted records).
    fn consumer_position(&self) -> Option<u64> {
        let list = self.consumer.position().ok()?;
        match list.find_partition(&self.topic, self.partition)?.offset() {
            Offset::Offset(offset) if offset >= 0 => Some(offset as u64),
            _ => None,
        }
    }

    fn limit(&self) -> Option<u64> {
        match (self.end, self.stop) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn report(&mut self, offset: u64, error: &ClickError) {
        self.skipped += 1;
        if self.skipped <= MAX_REPORTED {
            tracing::warn!("kafka topic {} partition {} offset {offset}: not a click, skipped: {error}", self.topic, self.partition);
        } else if self.skipped.is_power_of_two() {
            tracing::warn!(
                "kafka topic {} partition {}: {} records that are not clicks skipped so far",
                self.topic,
                self.partition,
                self.skipped
            );
        }
    }
}

impl PartitionReader for KafkaPartitionReader {
    fn read(&mut self, out: &mut Vec<Click>, max: usize) -> ReadStatus {
        let start = out.len();
        let mut waited = false;
        while out.len() - start < max {
            if self.limit().is_some_and(|limit| self.position >= limit) {
                break;
            }
            let wait = if out.len() == start && !waited && self.peeked.is_none() { FETCH_WAIT } else { Duration::ZERO };
            waited = true;
            let Some((offset, click)) = self.next(wait) else { break };
            if let Some(limit) = self.limit().filter(|&limit| offset >= limit) {
                // Past the limit: every offset below it was handed out, so
                // any left between here and the limit holds no click (a
                // transaction marker). Moved past only while this batch is
                // empty, so that a batch still ends at the position.
                if out.len() == start {
                    self.position = self.position.max(limit);
                }
                self.peeked = Some((offset, click));
                break;
            }
            if out.len() > start && (offset != self.position || click.is_err()) {
                // The batch would stop being consecutive.
                self.peeked = Some((offset, click));
                break;
            }
            match click {
                Ok(click) => out.push(click),
                Err(error) => self.report(offset, &error),
            }
            self.position = offset + 1;
        }
        if let Some(end) = self.end {
            if self.position >= end {
                return ReadStatus::Finished;
            }
        }
        if out.len() - start == max || self.peeked.is_some() {
            return ReadStatus::More;
        }
        let Some(high) = self.cached_high_watermark() else { return ReadStatus::More };
        if self.position < high && out.len() == start {
            // Nothing handed out, yet the partition has records: maybe only
            // markers the consumer skipped.
            if let Some(position) = self.consumer_position().filter(|&p| p > self.position) {
                self.position = self.limit().map_or(position, |limit| position.min(limit));
            }
        }
        if self.position >= high {
            ReadStatus::CaughtUp
        } else {
            ReadStatus::More
        }
    }

    fn position(&self) -> Option<u64> {
        Some(self.position)
    }

    fn stop_at(&mut self, offset: Option<u64>) {
        self.stop = offset;
    }
}
