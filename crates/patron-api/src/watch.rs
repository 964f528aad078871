//! `WatchLifecycleChanges`: the outbox, followed by polling, as a server stream.
//!
//! Outbox ids become visible in commit order (every projector commit locks the active
//! generation's row), so reading `id > last` in id order never skips a transition, and a
//! client that resumes from the last id it saw gets every later one exactly once.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use patron_proto::lifecycle::v1::LifecycleChanged;
use tokio::sync::mpsc;
use tonic::Status;

use crate::convert;
use crate::error::ApiError;
use crate::model::OutboxRow;
use crate::read_models::ReadModels;

/// Outbox rows read per query.
const BATCH: u32 = 500;
/// Messages buffered per stream before the poller waits for the client.
const BUFFER: usize = 64;

/// The stream of a watch call.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<LifecycleChanged, Status>> + Send>>;

/// What a watch sends.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    /// Only ids greater than this.
    pub(crate) after_id: i64,
    /// Only these stored stage names (empty = all).
    pub(crate) to_stages: HashSet<String>,
    /// Only customers who had granted this purpose when the change fired.
    pub(crate) consent_purpose: Option<String>,
}

/// Starts polling the outbox for `watch`; the task ends when the client goes away, or after
/// sending an error status (the client resumes from the last id it saw).
pub(crate) fn start(models: Arc<dyn ReadModels>, watch: Watch, poll: Duration) -> WatchStream {
    let (tx, mut rx) = mpsc::channel(BUFFER);
    tokio::spawn(follow(models, watch, poll, tx));
    Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

async fn follow(
    models: Arc<dyn ReadModels>,
    watch: Watch,
    poll: Duration,
    tx: mpsc::Sender<Result<LifecycleChanged, Status>>,
) {
    let mut last = watch.after_id;
    while !tx.is_closed() {
        let rows = match models.outbox(last, BATCH).await {
            Ok(rows) => rows,
            Err(error) => {
                let _ = tx.send(Err(error.into())).await;
                return;
            }
        };
        if rows.is_empty() {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = tx.closed() => return,
            }
            continue;
        }
        for row in rows {
            last = row.id;
            if !watch.to_stages.is_empty() && !watch.to_stages.contains(&row.to_stage) {
                continue;
            }
            let message = message(&row).map_err(Status::from);
            if let (Ok(change), Some(purpose)) = (&message, &watch.consent_purpose)
                && change.consent.get(purpose) != Some(&true)
            {
                continue;
            }
            let failed = message.is_err();
            if tx.send(message).await.is_err() || failed {
                return;
            }
        }
    }
}

/// An outbox row as the lifecycle topic's message.
fn message(row: &OutboxRow) -> Result<LifecycleChanged, ApiError> {
    let unsigned = |n: i64, what: &str| {
        u64::try_from(n).map_err(|_| ApiError::Internal(format!("outbox {what} {n}")))
    };
    Ok(LifecycleChanged {
        dedupe_id: row.dedupe_key.clone(),
        customer_id: row.customer_id.clone(),
        from_stage: convert::stored_stage(row.from_stage.as_deref())?,
        to_stage: convert::stored_stage(Some(&row.to_stage))?,
        occurred_at: Some(convert::timestamp(row.occurred_at)),
        rule: row.rule.clone(),
        facts: convert::facts(&row.facts)?,
        sequence: unsigned(i64::from(row.seq), "seq")?,
        position: unsigned(row.position, "position")?,
        outbox_id: unsigned(row.id, "id")?,
        retracts_dedupe_id: row.retracts.clone().unwrap_or_default(),
        historical: row.historical,
        consent: match &row.consent {
            Some(json) => serde_json::from_str(json)
                .map_err(|e| ApiError::Internal(format!("outbox consent: {e}")))?,
            None => Default::default(),
        },
    })
}
