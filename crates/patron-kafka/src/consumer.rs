//! The ingest consumer: Kafka records in, batches committed through `patron_ingest`.
//!
//! Effectively once: the event store holds each partition's next offset, written in the same
//! transaction as the events. On every assignment the consumer seeks to those offsets (or to the
//! beginning of a partition it has never stored), so whatever was not committed before a crash
//! or a rebalance is read again, and whatever was committed is not. Rebalancing is eager (all
//! partitions are revoked at once): on a revocation, everything read but not committed is dropped.
//!
//! Outages: when a commit fails transiently (the database is down), the consumer pauses its
//! partitions, keeps polling (so it stays in the group) and retries the same batch with
//! exponential backoff; once it succeeds, it resumes.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, BlockingRetryable, ExponentialBuilder};
use chrono::Utc;
use patron_ingest::{DeadLetterSink, InboundRecord, Ingestor, PreparedBatch, Settings, prepare};
use patron_store::{EventStore, SourceOffset, StoreError};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::runtime::Handle;
use tokio::time::{Instant, sleep_until};

use crate::{KafkaError, KafkaSettings};

/// How the consumer batches and where it reads.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Consumer group id; also the name offsets are stored under in the event store.
    pub group_id: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// Most records per batch (one store transaction).
    pub batch_size: usize,
    /// Longest a record waits for its batch to fill before the batch is committed anyway.
    pub batch_max_delay: Duration,
    /// First retry delay after a transient failure; doubles up to `retry_max_delay`.
    pub retry_min_delay: Duration,
    /// Longest retry delay.
    pub retry_max_delay: Duration,
}

impl IngestOptions {
    /// Defaults: batches of 1,000 records or 100 ms, retries from 100 ms up to 10 s.
    pub fn new(group_id: impl Into<String>, topics: Vec<String>) -> Self {
        Self {
            group_id: group_id.into(),
            topics,
            batch_size: 1000,
            batch_max_delay: Duration::from_millis(100),
            retry_min_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_secs(10),
        }
    }
}

/// Totals over a consumer's run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestSummary {
    /// Batches committed.
    pub batches: u64,
    /// Records committed (events, duplicates and dead letters).
    pub records: u64,
    /// Events newly stored.
    pub appended: u64,
    /// Events recognised as already stored.
    pub duplicates: u64,
    /// Records sent to dead-letter topics.
    pub dead_letters: u64,
    /// Times consumption was paused for an outage.
    pub pauses: u64,
}

/// Rebalance handling: seek to the offsets stored with the events; remember revocations.
struct IngestContext {
    store: Arc<dyn EventStore>,
    group: String,
    runtime: Handle,
    revoked: AtomicBool,
}

impl ClientContext for IngestContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, "{reason}");
    }
}

impl ConsumerContext for IngestContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.position_at_stored_offsets(tpl);
                let partitions = describe(tpl);
                match consumer.assign(tpl) {
                    Ok(()) => tracing::info!(%partitions, "partitions assigned"),
                    Err(error) => tracing::error!(%error, %partitions, "cannot assign partitions"),
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Everything read from these partitions but not yet committed is dropped by the
                // consume loop; the next owner reads it again from the stored offsets.
                self.revoked.store(true, Ordering::SeqCst);
                if let Err(error) = consumer.unassign() {
                    tracing::error!(%error, "cannot unassign partitions");
                }
                tracing::info!(partitions = %describe(tpl), "partitions revoked");
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed; dropping the assignment");
                self.revoked.store(true, Ordering::SeqCst);
                let _ = consumer.unassign();
            }
        }
    }
}

impl IngestContext {
    /// Sets each assigned partition's start: the next offset stored in the event store, or the
    /// beginning of a partition this group never stored.
    fn position_at_stored_offsets(&self, tpl: &mut TopicPartitionList) {
        let read = || {
            self.runtime
                .block_on(self.store.source_offsets(&self.group))
        };
        // The callback runs inside a poll on a runtime worker: block it in place, briefly.
        let stored = tokio::task::block_in_place(|| {
            read.retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_times(8),
            )
            .when(StoreError::is_transient)
            .call()
        });
        let stored: Vec<SourceOffset> = match stored {
            Ok(stored) => stored,
            Err(error) => {
                // Kafka's committed offsets trail the stored ones (they are committed after the
                // store), so starting there re-reads at most a few batches, which the store
                // recognises as duplicates. Nothing is lost.
                tracing::warn!(%error, "cannot read stored offsets; starting from Kafka's committed offsets");
                return;
            }
        };
        let assigned: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        for (topic, partition) in assigned {
            let offset = stored
                .iter()
                .find(|o| o.topic == topic && o.partition == partition)
                .map_or(Offset::Beginning, |o| Offset::Offset(o.next_offset));
            if let Err(error) = tpl.set_partition_offset(&topic, partition, offset) {
                tracing::error!(%error, %topic, partition, "cannot set the start offset");
            }
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}@{:?}", e.topic(), e.partition(), e.offset()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn to_record(message: &BorrowedMessage<'_>) -> InboundRecord {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .filter_map(|h| Some((h.key.to_owned(), h.value?.to_vec())))
                .collect()
        })
        .unwrap_or_default();
    InboundRecord {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        headers,
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

/// How a flush ended.
enum Flushed {
    /// Committed.
    Committed,
    /// Dropped: the partitions were revoked while the batch waited out an outage.
    Dropped,
    /// Abandoned: shutdown was requested while the batch waited out an outage.
    Stopped,
}

/// Consumes customer events and commits them in batches. Run it on a multi-threaded runtime.
pub struct IngestConsumer {
    consumer: StreamConsumer<IngestContext>,
    ingestor: Ingestor,
    settings: Settings,
    options: IngestOptions,
    summary: IngestSummary,
    paused: bool,
}

impl IngestConsumer {
    /// Creates the consumer (it connects when [`IngestConsumer::run`] subscribes).
    pub fn new(
        kafka: &KafkaSettings,
        options: IngestOptions,
        mut settings: Settings,
        store: Arc<dyn EventStore>,
        dead_letters: Arc<dyn DeadLetterSink>,
    ) -> Result<Self, KafkaError> {
        if options.topics.is_empty() {
            return Err(KafkaError::Config("no topics to consume".into()));
        }
        if options.batch_size == 0 {
            return Err(KafkaError::Config(
                "the batch size must be at least 1".into(),
            ));
        }
        if let Some((_, strategy)) = kafka
            .options
            .iter()
            .find(|(k, v)| k == "partition.assignment.strategy" && v.contains("cooperative"))
        {
            return Err(KafkaError::Config(format!(
                "partition.assignment.strategy={strategy}: only eager strategies (range, roundrobin) are supported"
            )));
        }
        settings.consumer.clone_from(&options.group_id);
        let context = IngestContext {
            store: Arc::clone(&store),
            group: options.group_id.clone(),
            runtime: Handle::current(),
            revoked: AtomicBool::new(false),
        };
        let consumer: StreamConsumer<IngestContext> = kafka
            .config(&[
                ("group.id", &options.group_id),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("partition.assignment.strategy", "range,roundrobin"),
                // Bound what librdkafka prefetches, so memory stays flat however far behind we are.
                ("queued.max.messages.kbytes", "16384"),
            ])
            .create_with_context(context)?;
        Ok(Self {
            consumer,
            ingestor: Ingestor::new(store, dead_letters),
            settings,
            options,
            summary: IngestSummary::default(),
            paused: false,
        })
    }

    /// Consumes until `shutdown` completes, then commits the batch in hand and leaves the group.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<IngestSummary, KafkaError> {
        let topics: Vec<&str> = self.options.topics.iter().map(String::as_str).collect();
        self.consumer.subscribe(&topics)?;
        tracing::info!(topics = ?self.options.topics, group = %self.options.group_id, "consuming");
        let mut shutdown = pin!(shutdown);
        let mut pending: Vec<InboundRecord> = Vec::with_capacity(self.options.batch_size);
        let mut deadline: Option<Instant> = None;
        loop {
            let timer = async {
                match deadline {
                    Some(at) => sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = timer => {
                    self.drop_if_revoked(&mut pending);
                    self.flush(&mut pending, &mut shutdown).await?;
                    deadline = None;
                }
                message = self.consumer.recv() => {
                    self.drop_if_revoked(&mut pending);
                    match message {
                        Ok(message) => pending.push(to_record(&message)),
                        Err(error) => tracing::warn!(%error, "kafka consumer error"),
                    }
                    if pending.is_empty() {
                        deadline = None;
                    } else if pending.len() >= self.options.batch_size {
                        self.flush(&mut pending, &mut shutdown).await?;
                        deadline = None;
                    } else if deadline.is_none() {
                        deadline = Some(Instant::now() + self.options.batch_max_delay);
                    }
                }
            }
        }
        tracing::info!(
            records = pending.len(),
            "shutting down: committing the batch in hand"
        );
        self.drop_if_revoked(&mut pending);
        let mut stopped = pin!(std::future::ready(()));
        self.flush(&mut pending, &mut stopped).await?;
        self.consumer.unsubscribe();
        tracing::info!(summary = ?self.summary, "consumer stopped");
        Ok(self.summary)
    }

    fn drop_if_revoked(&self, pending: &mut Vec<InboundRecord>) {
        if self
            .consumer
            .context()
            .revoked
            .swap(false, Ordering::SeqCst)
            && !pending.is_empty()
        {
            tracing::info!(
                records = pending.len(),
                "dropping records of revoked partitions; they will be read again"
            );
            pending.clear();
        }
    }

    async fn flush<F: Future<Output = ()>>(
        &mut self,
        pending: &mut Vec<InboundRecord>,
        shutdown: &mut std::pin::Pin<&mut F>,
    ) -> Result<(), KafkaError> {
        while !pending.is_empty() {
            let prepared = prepare(std::mem::take(pending), &self.settings, Utc::now());
            match self.commit(prepared, pending, shutdown).await? {
                Flushed::Committed => {}
                Flushed::Dropped => pending.clear(),
                Flushed::Stopped => {
                    pending.clear();
                    break;
                }
            }
            // Records that arrived while waiting out an outage form the next batch.
        }
        Ok(())
    }

    async fn commit<F: Future<Output = ()>>(
        &mut self,
        mut prepared: PreparedBatch,
        overflow: &mut Vec<InboundRecord>,
        shutdown: &mut std::pin::Pin<&mut F>,
    ) -> Result<Flushed, KafkaError> {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.options.retry_min_delay)
            .with_max_delay(self.options.retry_max_delay)
            .without_max_times()
            .build();
        loop {
            match self.ingestor.commit(&mut prepared).await {
                Ok(report) => {
                    self.resume();
                    self.summary.batches += 1;
                    self.summary.records += report.records as u64;
                    self.summary.appended += report.appended;
                    self.summary.duplicates += report.duplicates;
                    self.summary.dead_letters += report.dead_letters.len() as u64;
                    tracing::info!(
                        records = report.records,
                        appended = report.appended,
                        duplicates = report.duplicates,
                        dead_letters = report.dead_letters.len(),
                        position = report.last_position.map(|p| p.0),
                        "batch committed"
                    );
                    self.commit_to_kafka(&prepared.batch.offsets);
                    return Ok(Flushed::Committed);
                }
                Err(error) if error.is_transient() => {
                    self.pause();
                    let delay = delays.next().unwrap_or(self.options.retry_max_delay);
                    tracing::warn!(%error, retry_in = ?delay, "cannot commit the batch; consumption paused");
                    let wake = Instant::now() + delay;
                    loop {
                        tokio::select! {
                            biased;
                            () = shutdown.as_mut() => {
                                tracing::warn!("stopping with an uncommitted batch; it will be read again");
                                return Ok(Flushed::Stopped);
                            }
                            () = sleep_until(wake) => break,
                            // Keep polling while paused: it keeps this member in the group and
                            // runs rebalance callbacks.
                            message = self.consumer.recv() => {
                                if self.consumer.context().revoked.swap(false, Ordering::SeqCst) {
                                    tracing::info!("partitions revoked during an outage; dropping the batch");
                                    self.paused = false;
                                    return Ok(Flushed::Dropped);
                                }
                                if let Ok(message) = message {
                                    overflow.push(to_record(&message));
                                }
                                self.pause();
                            }
                        }
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Pauses every assigned partition (again, after a rebalance brought new ones).
    fn pause(&mut self) {
        if !self.paused {
            self.summary.pauses += 1;
            metrics::counter!("patron_ingest_pauses_total").increment(1);
        }
        self.paused = true;
        if let Ok(assignment) = self.consumer.assignment()
            && let Err(error) = self.consumer.pause(&assignment)
        {
            tracing::warn!(%error, "cannot pause partitions");
        }
    }

    fn resume(&mut self) {
        if !self.paused {
            return;
        }
        self.paused = false;
        match self.consumer.assignment() {
            Ok(assignment) => {
                if let Err(error) = self.consumer.resume(&assignment) {
                    tracing::warn!(%error, "cannot resume partitions");
                }
                tracing::info!("event store reachable again; consumption resumed");
            }
            Err(error) => tracing::warn!(%error, "cannot read the assignment to resume"),
        }
    }

    /// Commits the stored offsets to Kafka too, asynchronously, so that standard tools show the
    /// group's lag. The event store stays the source of truth.
    fn commit_to_kafka(&self, offsets: &[SourceOffset]) {
        let mut tpl = TopicPartitionList::new();
        for o in offsets {
            if let Err(error) =
                tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.next_offset))
            {
                tracing::debug!(%error, "cannot list an offset for Kafka");
            }
        }
        if tpl.count() > 0
            && let Err(error) = self.consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::debug!(%error, "offset commit to Kafka failed (monitoring only)");
        }
    }
}
