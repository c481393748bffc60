//! Kafka as the log behind the ingest API: a [`ClickLog`] whose append
//! returns once every click of the request has its delivery report.
//!
//! The producer is idempotent with `acks=all`: a delivered click is in every
//! in-sync replica, and librdkafka's own retries never write it twice. Each
//! click is one message keyed by its request id (partitioner `murmur2_random`,
//! the Java client's default, so every producer of the topic agrees on the
//! partition of a retry), its value the click as JSON with the hashed user
//! ([`crate::sources::kafka::message`]). A click whose delivery failed or
//! timed out fails the whole request (503 with Retry-After): nothing is
//! acknowledged that is not in Kafka. A click that timed out may still have
//! been written; the client's retry then lands in the same partition with
//! the same request id, and the job drops the duplicate.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::Message;

use crate::event::Click;
use crate::sources::kafka::{client_config, message, KafkaTopic};

use super::server::ClickLog;

/// How long a click may wait for its delivery report: past it, the request
/// fails with 503 (librdkafka's `message.timeout.ms`).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The ingest side of a Kafka topic.
pub struct KafkaLog {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
}

impl KafkaLog {
    /// Connects to the brokers, creating the topic if it is missing.
    pub fn connect(topic: &KafkaTopic) -> Result<KafkaLog, String> {
        topic.ensure()?;
        let producer = client_config(&topic.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "2")
            .set("message.timeout.ms", DELIVERY_TIMEOUT.as_millis().to_string())
            .set("queue.buffering.max.messages", "1000000")
            .create_with_context(Deliveries)
            .map_err(|e| format!("kafka producer for {}: {e}", topic.brokers))?;
        Ok(KafkaLog { producer, topic: topic.topic.clone() })
    }

    /// Where clicks go, for the start-up summary.
    pub fn describe(&self) -> String {
        format!("kafka topic {} (idempotent producer, acks=all)", self.topic)
    }
}

impl ClickLog for KafkaLog {
    fn append_durable(&self, clicks: &[Click]) -> Result<Vec<(u32, u64)>, String> {
        let state = Delivered { waiting: clicks.len(), error: None, positions: Vec::with_capacity(clicks.len()) };
        let batch = Arc::new(Batch { state: Mutex::new(state), done: Condvar::new() });
        let deadline = Instant::now() + DELIVERY_TIMEOUT + Duration::from_secs(5);
        let mut value = Vec::with_capacity(160);
        for click in clicks {
            let key = message::key(click);
            message::encode(click, &mut value);
            let mut record = BaseRecord::with_opaque_to(&self.topic, Arc::clone(&batch)).key(&key).payload(&value);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) if Instant::now() < deadline => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((error, _)) => {
                        batch.finish(Err(format!("kafka: {error}")));
                        break;
                    }
                }
            }
        }
        batch.wait(deadline)
    }
}

/// The delivery reports of one request's clicks.
struct Batch {
    state: Mutex<Delivered>,
    done: Condvar,
}

/// What the reports of a request's clicks said so far.
struct Delivered {
    /// Clicks without a report yet.
    waiting: usize,
    /// The first failure.
    error: Option<String>,
    /// (partition, offset) of each delivered click.
    positions: Vec<(u32, u64)>,
}

impl Batch {
    fn finish(&self, report: Result<(u32, u64), String>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.waiting = state.waiting.saturating_sub(1);
        match report {
            Ok(position) => state.positions.push(position),
            Err(error) => {
                state.error.get_or_insert(error);
            }
        }
        if state.waiting == 0 {
            self.done.notify_all();
        }
    }

    fn wait(&self, deadline: Instant) -> Result<Vec<(u32, u64)>, String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.waiting > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("kafka: {} clicks without a delivery report after {} s", state.waiting, DELIVERY_TIMEOUT.as_secs()));
            }
            state = self.done.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        match state.error.take() {
            None => Ok(std::mem::take(&mut state.positions)),
            Some(error) => Err(error),
        }
    }
}

/// Routes each delivery report to its request's [`Batch`].
struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Arc<Batch>;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: Self::DeliveryOpaque) {
        let report = match result {
            Ok(message) => Ok((message.partition().max(0) as u32, message.offset().max(0) as u64)),
            Err((error, _)) => Err(format!("kafka: {error}")),
        };
        batch.finish(report);
    }
}
