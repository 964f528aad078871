//! The ingest consumer: Kafka records in, batches committed through `patron_ingest`.
//!
//! Effectively once: the event store holds each partition's next offset, written in the same
//! transaction as the events. On every assignment the consumer seeks to those offsets (or to the
//! beginning of a partition it has never stored), so whatever was not committed before a crash
//! or a rebalance is read again, and whatever was committed is not. Rebalancing is eager (all
//! partitions are revoked at once): on a revocation, everything read but not committed is dropped.
//!
//! Pipelining: a batch commits in a task of its own while the next batch is read and decoded, so
//! decoding overlaps the database's work. At most one batch is in flight; a revocation waits for
//! it (or cancels it while it waits out an outage) before the partitions move, so the next owner
//! always starts from offsets that no older commit can still overtake.
//!
//! Outages: when a commit fails transiently (the database is down), the committing task asks for
//! the partitions to be paused and retries the same batch with exponential backoff, while the
//! consume loop pauses them and keeps polling (so the member stays in the group); once the commit
//! succeeds, the loop resumes each partition and seeks it to the offset after the last record it
//! read. The loop alone pauses and resumes (no stale pause can land after a resume). The seek
//! matters: librdkafka 2.12 resumes a partition without waking the fetcher that dropped it while
//! paused (seen: a minute before it was read again), and a seek restarts it at a position this
//! consumer knows to be right.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, BlockingRetryable, ExponentialBuilder};
use chrono::Utc;
use patron_domain::Event;
use patron_ingest::{
    DeadLetterSink, InboundRecord, Ingestor, PreparedBatch, Settings, SourceTracker, prepare,
};
use patron_store::{EventStore, SourceOffset, StoreError};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::runtime::Handle;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use crate::positions::{Jump, Positions};
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
    /// Static group membership (`group.instance.id`): a member that restarts under the same id
    /// (a Kubernetes pod's name survives a container restart) takes its partitions back at once
    /// instead of waiting for its old session to time out.
    pub instance_id: Option<String>,
}

impl IngestOptions {
    /// Defaults: batches of 5,000 records or 100 ms, retries from 100 ms up to 10 s.
    pub fn new(group_id: impl Into<String>, topics: Vec<String>) -> Self {
        Self {
            group_id: group_id.into(),
            topics,
            batch_size: 5000,
            batch_max_delay: Duration::from_millis(100),
            retry_min_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_secs(10),
            instance_id: None,
        }
    }
}

/// Checks a static member id as Kafka accepts it: 1-249 characters of `A-Z a-z 0-9 . _ -`.
fn check_instance_id(id: &str) -> Result<(), KafkaError> {
    let valid = !id.is_empty()
        && id.len() <= 249
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(KafkaError::Config(format!(
            "group instance id {id:?}: 1-249 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
        )))
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
    /// Times the first record after an assignment or seek was not at the offset asked for
    /// (`patron_ingest_offset_jumps_total`).
    pub jumps: u64,
}

/// State shared by the consume loop, the committing task and the rebalance callback.
struct Shared {
    /// One permit: held by the batch in flight.
    in_flight: Arc<Semaphore>,
    /// Set by a revocation: the batch in flight must not commit any more.
    cancel: AtomicBool,
    /// Set on shutdown: the batch in flight gives up instead of waiting out an outage.
    stopping: AtomicBool,
    /// Wakes a committing task that waits out an outage.
    wake: Notify,
    /// Whether the partitions should be paused for an outage (set by the committing task, acted
    /// on by the consume loop).
    paused: AtomicBool,
    /// Wakes the consume loop: the pause was asked for, or a partition's end became known.
    wake_loop: Notify,
    /// Outages so far.
    pauses: AtomicU64,
}

/// Rebalance handling: seek to the offsets stored with the events; remember revocations.
struct IngestContext {
    store: Arc<dyn EventStore>,
    group: String,
    runtime: Handle,
    revoked: AtomicBool,
    shared: Arc<Shared>,
    /// Partitions whose lag was last reported by this consumer, to zero them once they are gone.
    lagging: std::sync::Mutex<HashSet<(String, i32)>>,
    /// Partitions assigned since the consume loop last looked, with the offset each starts at:
    /// behind until their end is reported (see `SourceTracker::assigned`).
    assigned: std::sync::Mutex<Vec<(String, i32, Offset)>>,
    /// Each partition's end as the latest statistics give it (the high watermark of its latest
    /// fetch), so that reaching it is known even when no end-of-partition event comes.
    ends: std::sync::Mutex<HashMap<(String, i32), i64>>,
}

impl IngestContext {
    /// Publishes `patron_ingest_consumer_lag{topic, partition}` from librdkafka's statistics:
    /// the records between the partition's end and the offset this group committed. A partition
    /// no longer assigned here is set to 0, so a scrape never shows a lag that is not ours.
    fn report_lag(&self, statistics: &Statistics) {
        let mut now = HashSet::new();
        for (topic, partitions) in &statistics.topics {
            for (&partition, stats) in &partitions.partitions {
                // -1 is librdkafka's "unassigned" partition; a negative lag means "not known".
                if partition < 0 || stats.consumer_lag < 0 {
                    continue;
                }
                lag_gauge(topic, partition).set(stats.consumer_lag as f64);
                now.insert((topic.clone(), partition));
            }
        }
        self.note_ends(statistics);
        let Ok(mut lagging) = self.lagging.lock() else {
            return;
        };
        for (topic, partition) in lagging.difference(&now) {
            lag_gauge(topic, *partition).set(0.0);
        }
        *lagging = now;
    }
}

impl IngestContext {
    /// Keeps each partition's high watermark from `statistics` and wakes the consume loop when
    /// one is known.
    fn note_ends(&self, statistics: &Statistics) {
        let mut ends = self
            .ends
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ends.clear();
        for (topic, partitions) in &statistics.topics {
            for (&partition, stats) in &partitions.partitions {
                if partition >= 0 && stats.hi_offset >= 0 {
                    ends.insert((topic.clone(), partition), stats.hi_offset);
                }
            }
        }
        if !ends.is_empty() {
            self.shared.wake_loop.notify_one();
        }
    }
}

fn lag_gauge(topic: &str, partition: i32) -> metrics::Gauge {
    metrics::gauge!(
        "patron_ingest_consumer_lag",
        "topic" => topic.to_owned(),
        "partition" => partition.to_string()
    )
}

impl ClientContext for IngestContext {
    fn stats(&self, statistics: Statistics) {
        self.report_lag(&statistics);
    }

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
                    Ok(()) => {
                        tracing::info!(%partitions, "partitions assigned");
                        let assigned: Vec<(String, i32, Offset)> = tpl
                            .elements()
                            .iter()
                            .map(|e| (e.topic().to_owned(), e.partition(), e.offset()))
                            .collect();
                        self.assigned
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .extend(assigned);
                    }
                    Err(error) => tracing::error!(%error, %partitions, "cannot assign partitions"),
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Everything read from these partitions but not yet committed is dropped by the
                // consume loop; the next owner reads it again from the stored offsets. A batch in
                // flight finishes (or is cancelled, if it waits out an outage) first.
                self.revoked.store(true, Ordering::SeqCst);
                self.shared.cancel.store(true, Ordering::SeqCst);
                self.shared.wake.notify_one();
                let in_flight = Arc::clone(&self.shared.in_flight);
                let _idle = tokio::task::block_in_place(|| {
                    self.runtime.block_on(in_flight.acquire_owned())
                });
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

/// How a batch's commit ended.
enum Outcome {
    /// Committed, with the source progress it stored.
    Committed(patron_ingest::BatchReport, Vec<Event>),
    /// Not committed: its partitions were revoked, or shutdown came during an outage. Its
    /// records will be read again from the stored offsets.
    Abandoned,
}

/// Consumes customer events and commits them in batches. Run it on a multi-threaded runtime.
pub struct IngestConsumer {
    consumer: Arc<StreamConsumer<IngestContext>>,
    ingestor: Arc<Ingestor>,
    settings: Settings,
    options: IngestOptions,
    shared: Arc<Shared>,
    summary: IngestSummary,
    /// What the partitions' progress is and what the log says of it.
    tracker: SourceTracker,
    /// Where each assigned partition is read next: its start, then the offset after the last
    /// record read from it. Reading resumes there after a pause.
    positions: Positions,
    /// Whether the loop has paused the partitions (see `Shared::paused` for the request).
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
        if let Some(id) = &options.instance_id {
            check_instance_id(id)?;
        }
        settings.consumer.clone_from(&options.group_id);
        let tracker = SourceTracker::new(options.topics.clone());
        let shared = Arc::new(Shared {
            in_flight: Arc::new(Semaphore::new(1)),
            cancel: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            wake: Notify::new(),
            paused: AtomicBool::new(false),
            wake_loop: Notify::new(),
            pauses: AtomicU64::new(0),
        });
        let context = IngestContext {
            store: Arc::clone(&store),
            group: options.group_id.clone(),
            runtime: Handle::current(),
            revoked: AtomicBool::new(false),
            shared: Arc::clone(&shared),
            lagging: std::sync::Mutex::new(HashSet::new()),
            assigned: std::sync::Mutex::new(Vec::new()),
            ends: std::sync::Mutex::new(HashMap::new()),
        };
        let mut base: Vec<(&str, &str)> = vec![
            ("group.id", &options.group_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("partition.assignment.strategy", "range,roundrobin"),
            // Bound what librdkafka prefetches, so memory stays flat however far behind we are.
            ("queued.max.messages.kbytes", "16384"),
            // Statistics every 5 s feed the consumer-lag gauge.
            ("statistics.interval.ms", "5000"),
            // The end of each partition is reported (source progress, see SourceTracker).
            ("enable.partition.eof", "true"),
            // A member that died without leaving holds its partitions until its session
            // times out (librdkafka's default is 45 s): 10 s, as Kafka long had.
            ("session.timeout.ms", "10000"),
        ];
        if let Some(id) = &options.instance_id {
            base.push(("group.instance.id", id));
        }
        let consumer: StreamConsumer<IngestContext> =
            kafka.config(&base).create_with_context(context)?;
        Ok(Self {
            consumer: Arc::new(consumer),
            ingestor: Arc::new(Ingestor::new(store, dead_letters)),
            settings,
            options,
            shared,
            summary: IngestSummary::default(),
            tracker,
            positions: Positions::default(),
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
        // A message borrows the consumer, while the loop's state changes under it.
        let consumer = Arc::clone(&self.consumer);
        let mut pending: Vec<InboundRecord> = Vec::with_capacity(self.options.batch_size);
        let mut deadline: Option<Instant> = None;
        let mut in_flight: Option<JoinHandle<Result<Outcome, KafkaError>>> = None;
        // The next batch, decoded while the one in flight commits.
        let mut ready: Option<PreparedBatch> = None;
        loop {
            if self.revoked() {
                self.forget();
                pending.clear();
                ready = None;
                deadline = None;
            }
            if self.take_assigned() && pending.is_empty() && deadline.is_none() {
                deadline = Some(Instant::now() + self.options.batch_max_delay);
            }
            self.follow_pause();
            // A partition that reached its end is news even with no record to go with it.
            let news = self.tracker.has_news(Utc::now());
            if pending.is_empty() && !news {
                // Nothing waits for a deadline (the news it was set for may have been stored
                // since): a deadline left behind would fire at once on every turn and starve
                // the reading of records.
                deadline = None;
            }
            let due = (!pending.is_empty() || news)
                && (pending.len() >= self.options.batch_size
                    || deadline.is_some_and(|d| d <= Instant::now()));
            if due && ready.is_none() {
                ready = Some(self.prepare(std::mem::take(&mut pending)));
                deadline = None;
            }
            if in_flight.is_none()
                && let Some(batch) = ready.take()
            {
                in_flight = Some(self.start_commit(batch));
            }
            let idle = ready.is_none();
            let timer = async {
                match deadline {
                    Some(at) if idle => sleep_until(at).await,
                    _ => std::future::pending().await,
                }
            };
            let committed = async {
                match in_flight.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            };
            // While a full batch waits for the one in flight, stop reading (backpressure), unless
            // paused for an outage: then keep polling to stay in the group.
            let read = pending.len() < self.options.batch_size || self.paused;
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = self.shared.wake_loop.notified() => {
                    self.follow_pause();
                    self.note_ends();
                    if self.tracker.has_news(Utc::now()) && deadline.is_none() {
                        deadline = Some(Instant::now() + self.options.batch_max_delay);
                    }
                }
                done = committed => {
                    in_flight = None;
                    self.record(done)?;
                    if self.tracker.has_news(Utc::now()) && deadline.is_none() {
                        deadline = Some(Instant::now() + self.options.batch_max_delay);
                    }
                }
                () = timer => {}
                message = consumer.recv(), if read => {
                    if self.revoked() {
                        self.forget();
                        pending.clear();
                        ready = None;
                    }
                    // An assignment made during this poll comes before what the poll returned
                    // (the end of a partition just assigned, say).
                    self.take_assigned();
                    match message {
                        Ok(message) => {
                            // Behind until the partition's end is reported (partition EOF,
                            // which librdkafka emits once it has fetched up to the end, also
                            // when a transaction's control record marks it; or the statistics'
                            // high watermark, see `note_ends`).
                            self.tracker.read(message.topic(), message.partition());
                            if let Some(jump) = self.positions.read(
                                message.topic(),
                                message.partition(),
                                message.offset(),
                            ) {
                                self.jumped(message.topic(), message.partition(), jump);
                            }
                            pending.push(to_record(&message));
                        }
                        Err(rdkafka::error::KafkaError::PartitionEOF(partition)) => {
                            self.tracker.reached_end(partition);
                        }
                        Err(error) => tracing::warn!(%error, "kafka consumer error"),
                    }
                    self.follow_pause();
                    if pending.is_empty() && !self.tracker.has_news(Utc::now()) {
                        deadline = None;
                    } else if deadline.is_none() {
                        deadline = Some(Instant::now() + self.options.batch_max_delay);
                    }
                }
            }
        }

        tracing::info!(
            records = pending.len(),
            "shutting down: committing what is in hand"
        );
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        if let Some(task) = in_flight.take() {
            self.record(task.await)?;
        }
        if self.revoked() {
            self.forget();
            pending.clear();
            ready = None;
        }
        if let Some(batch) = ready.take() {
            let task = self.start_commit(batch);
            self.record(task.await)?;
        }
        // What is in hand, or else what the log does not know yet of the partitions' progress
        // (a partition read to its end is released, not left holding event time).
        if !pending.is_empty() || self.tracker.has_news(Utc::now()) {
            let batch = self.prepare(std::mem::take(&mut pending));
            let task = self.start_commit(batch);
            self.record(task.await)?;
        }
        self.consumer.unsubscribe();
        self.summary.pauses = self.shared.pauses.load(Ordering::SeqCst);
        tracing::info!(summary = ?self.summary, "consumer stopped");
        Ok(self.summary)
    }

    /// Forgets the partitions: they were revoked (what they are is for their next owner to
    /// report and read; if they come back, they are assigned afresh).
    fn forget(&mut self) {
        self.tracker.reset();
        self.positions.clear();
    }

    /// Tells the tracker of the partitions assigned since the last call and notes where each
    /// starts; pauses them if consumption is paused. Returns whether there were any.
    fn take_assigned(&mut self) -> bool {
        let assigned = std::mem::take(
            &mut *self
                .consumer
                .context()
                .assigned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if assigned.is_empty() {
            return false;
        }
        let partitions: Vec<(String, i32)> =
            assigned.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
        self.tracker.assigned(&partitions);
        for (topic, partition, offset) in assigned {
            self.positions.start(&topic, partition, offset);
        }
        if self.paused {
            pause(&self.consumer);
        }
        true
    }

    /// Pauses or resumes the partitions as the committing task asks. On resume, each partition
    /// is read from the offset after the last record read from it (or from its start).
    fn follow_pause(&mut self) {
        let wanted = self.shared.paused.load(Ordering::SeqCst);
        if wanted == self.paused {
            return;
        }
        self.paused = wanted;
        if wanted {
            pause(&self.consumer);
            return;
        }
        let assignment = match self.consumer.assignment() {
            Ok(assignment) => assignment,
            Err(error) => {
                tracing::warn!(%error, "cannot read the assignment to resume");
                return;
            }
        };
        if let Err(error) = self.consumer.resume(&assignment) {
            tracing::warn!(%error, "cannot resume partitions");
        }
        // After the resume: a seek restarts the partition's fetcher. librdkafka 2.12 resumes a
        // partition without waking its broker's fetcher, which was seen to leave it unread for
        // a minute, and where it resumes need not be where this consumer stopped.
        self.positions.sought();
        for element in assignment.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            let Some(offset) = self.positions.next(topic, partition) else {
                continue;
            };
            if let Err(error) = self.consumer.seek(topic, partition, offset, Duration::ZERO) {
                tracing::warn!(%error, %topic, partition, "cannot set where reading resumes");
            }
        }
        tracing::info!("event store reachable again; consumption resumed");
    }

    /// Marks as ended each partition read up to the high watermark its latest statistics give,
    /// unless paused (a paused partition's watermark is not refreshed). librdkafka reports a
    /// partition's end once per end offset: if that report was dropped with a pause, this is
    /// how the end becomes known.
    fn note_ends(&mut self) {
        if self.paused {
            return;
        }
        let ends = self
            .consumer
            .context()
            .ends
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for ((topic, partition), end) in ends {
            if let Some(Offset::Offset(next)) = self.positions.next(&topic, partition)
                && next >= end
            {
                self.tracker.reached_end_of(&topic, partition);
            }
        }
    }

    /// Reports that the first record after an assignment or seek was not at the offset asked for.
    fn jumped(&mut self, topic: &str, partition: i32, jump: Jump) {
        self.summary.jumps += 1;
        metrics::counter!(
            "patron_ingest_offset_jumps_total",
            "topic" => topic.to_owned(),
            "partition" => partition.to_string()
        )
        .increment(1);
        if jump.got > jump.asked {
            tracing::warn!(
                %topic, partition, asked = jump.asked, got = jump.got,
                skipped = jump.got - jump.asked,
                "the broker answered past the offset asked for: records in between were not read \
                 (deleted by retention, or served from the wrong place; transaction markers take \
                 offsets too)"
            );
        } else {
            tracing::warn!(
                %topic, partition, asked = jump.asked, got = jump.got,
                "the broker answered before the offset asked for (the topic recreated, or its \
                 offset reset): records are read again; those stored already are duplicates"
            );
        }
    }

    /// Whether partitions were revoked since the last call: then every record read but not yet
    /// committed must be dropped (the next owner reads it again from the stored offsets), and
    /// what this consumer knew of their progress is forgotten.
    fn revoked(&self) -> bool {
        let revoked = self
            .consumer
            .context()
            .revoked
            .swap(false, Ordering::SeqCst);
        if revoked {
            tracing::info!(
                "partitions revoked: dropping uncommitted records; they will be read again"
            );
        }
        revoked
    }

    /// Decodes and validates a batch.
    fn prepare(&mut self, records: Vec<InboundRecord>) -> PreparedBatch {
        let _span = tracing::info_span!("ingest.decode", records = records.len()).entered();
        let now = Utc::now();
        let mut prepared = prepare(records, &self.settings, now);
        prepared.progress = self.tracker.report(&prepared, now);
        prepared
    }

    /// Commits a prepared batch in a task of its own.
    fn start_commit(&self, prepared: PreparedBatch) -> JoinHandle<Result<Outcome, KafkaError>> {
        // Nothing is in flight (the loop only starts a commit then), so the permit is free.
        let permit = Arc::clone(&self.shared.in_flight).try_acquire_owned().ok();
        self.shared.cancel.store(false, Ordering::SeqCst);
        let span = tracing::info_span!(
            "ingest.batch",
            records = prepared.records,
            events = prepared
                .batch
                .streams
                .iter()
                .map(|s| s.events.len())
                .sum::<usize>(),
            dead_letters = prepared.dead_letters.len(),
        );
        tokio::spawn(tracing::Instrument::instrument(
            commit(
                Arc::clone(&self.consumer),
                Arc::clone(&self.ingestor),
                Arc::clone(&self.shared),
                self.options.clone(),
                prepared,
                permit,
            ),
            span,
        ))
    }

    fn record(
        &mut self,
        done: Result<Result<Outcome, KafkaError>, tokio::task::JoinError>,
    ) -> Result<(), KafkaError> {
        let outcome =
            done.map_err(|e| KafkaError::Config(format!("commit task failed: {e}")))??;
        if let Outcome::Committed(report, progress) = outcome {
            self.tracker.committed(&progress);
            self.summary.batches += 1;
            self.summary.records += report.records as u64;
            self.summary.appended += report.appended;
            self.summary.duplicates += report.duplicates;
            self.summary.dead_letters += report.dead_letters.len() as u64;
        }
        Ok(())
    }
}

/// Commits one batch, waiting out transient failures with backoff (partitions paused meanwhile).
async fn commit(
    consumer: Arc<StreamConsumer<IngestContext>>,
    ingestor: Arc<Ingestor>,
    shared: Arc<Shared>,
    options: IngestOptions,
    mut prepared: PreparedBatch,
    _permit: Option<OwnedSemaphorePermit>,
) -> Result<Outcome, KafkaError> {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(options.retry_min_delay)
        .with_max_delay(options.retry_max_delay)
        .without_max_times()
        .build();
    loop {
        if shared.cancel.load(Ordering::SeqCst) {
            return Ok(Outcome::Abandoned);
        }
        let started = Instant::now();
        match ingestor.commit(&mut prepared).await {
            Ok(report) => {
                // The consume loop resumes once it sees this batch done.
                shared.paused.store(false, Ordering::SeqCst);
                tracing::debug!(
                    records = report.records,
                    appended = report.appended,
                    duplicates = report.duplicates,
                    dead_letters = report.dead_letters.len(),
                    position = report.last_position.map(|p| p.0),
                    millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "batch committed"
                );
                commit_to_kafka(&consumer, &prepared.batch.offsets);
                let progress = prepared.progress_appended.clone();
                return Ok(Outcome::Committed(report, progress));
            }
            Err(error) if error.is_transient() => {
                if shared.stopping.load(Ordering::SeqCst) {
                    tracing::warn!(%error, "stopping with an uncommitted batch; it will be read again");
                    return Ok(Outcome::Abandoned);
                }
                if !shared.paused.swap(true, Ordering::SeqCst) {
                    shared.pauses.fetch_add(1, Ordering::SeqCst);
                    metrics::counter!("patron_ingest_pauses_total").increment(1);
                    shared.wake_loop.notify_one();
                }
                let delay = delays.next().unwrap_or(options.retry_max_delay);
                tracing::warn!(%error, retry_in = ?delay, "cannot commit the batch; consumption paused");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shared.wake.notified() => {}
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Pauses every assigned partition (again, after a rebalance brought new ones).
fn pause(consumer: &StreamConsumer<IngestContext>) {
    if let Ok(assignment) = consumer.assignment()
        && let Err(error) = consumer.pause(&assignment)
    {
        tracing::warn!(%error, "cannot pause partitions");
    }
}

/// Commits the stored offsets to Kafka too, asynchronously, so that standard tools show the
/// group's lag. The event store stays the source of truth.
fn commit_to_kafka(consumer: &StreamConsumer<IngestContext>, offsets: &[SourceOffset]) {
    let mut tpl = TopicPartitionList::new();
    for o in offsets {
        if let Err(error) =
            tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.next_offset))
        {
            tracing::debug!(%error, "cannot list an offset for Kafka");
        }
    }
    if tpl.count() > 0
        && let Err(error) = consumer.commit(&tpl, CommitMode::Async)
    {
        tracing::debug!(%error, "offset commit to Kafka failed (monitoring only)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_checked_as_kafka_does() {
        for good in [
            "patron-ingest-7d9f8-abcde",
            "a",
            "x.y_z-1",
            &"a".repeat(249),
        ] {
            assert!(check_instance_id(good).is_ok(), "{good}");
        }
        for bad in ["", "has space", "ünïcode", "slash/no", &"a".repeat(250)] {
            assert!(check_instance_id(bad).is_err(), "{bad}");
        }
    }
}
