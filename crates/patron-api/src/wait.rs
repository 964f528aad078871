//! Read-your-writes: wait until the read models have applied the log up to a position.

use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;

use crate::error::ApiError;
use crate::read_models::ReadModels;

/// The longest a query waits for `min_position`, whatever its deadline.
pub const MAX_WAIT: Duration = Duration::from_secs(10);
/// How often the checkpoint is read while waiting.
const POLL: Duration = Duration::from_millis(50);

/// How long a call may wait: its `grpc-timeout` (minus a margin to answer in time), at most
/// [`MAX_WAIT`].
pub(crate) fn budget(metadata: &MetadataMap) -> Duration {
    let asked = metadata
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(grpc_timeout);
    match asked {
        Some(timeout) => timeout.saturating_sub(timeout / 10).min(MAX_WAIT),
        None => MAX_WAIT,
    }
}

/// Parses a `grpc-timeout` header: up to 8 digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(text: &str) -> Option<Duration> {
    let split = text.len().checked_sub(1)?;
    let (digits, unit) = (text.get(..split)?, text.get(split..)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Returns once the active generation's checkpoint is at least `min_position` (at once for 0),
/// or [`ApiError::NotReached`] after `budget`.
pub(crate) async fn until_position(
    models: &dyn ReadModels,
    min_position: u64,
    budget: Duration,
) -> Result<(), ApiError> {
    if min_position == 0 {
        return Ok(());
    }
    let start = Instant::now();
    loop {
        let reached = models.position().await?;
        if reached >= min_position {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= budget {
            return Err(ApiError::NotReached {
                wanted: min_position,
                reached,
                waited_ms: waited.as_millis(),
            });
        }
        tokio::time::sleep(POLL.min(budget - waited)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_by_unit() {
        assert_eq!(grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("99999u"), Some(Duration::from_micros(99_999)));
        for bad in ["", "S", "5", "5s", "123456789S", "-1S", "1.5S"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn budgets_are_capped() {
        let mut metadata = MetadataMap::new();
        assert_eq!(budget(&metadata), MAX_WAIT);
        metadata.insert("grpc-timeout", "1000m".parse().unwrap());
        assert_eq!(budget(&metadata), Duration::from_millis(900));
        metadata.insert("grpc-timeout", "1H".parse().unwrap());
        assert_eq!(budget(&metadata), MAX_WAIT);
    }
}
