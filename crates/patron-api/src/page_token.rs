//! Opaque, stable page tokens for keyset pagination.
//!
//! A token carries the last customer id of the page it ends and the filters the page was read
//! with, so a token presented with other filters is refused instead of silently skipping or
//! repeating customers. The encoding (URL-safe base64 of `v1`, the filters and the id, one per
//! line) is not a contract: clients pass tokens back unchanged.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::ApiError;
use crate::model::CustomerFilter;

const VERSION: &str = "v1";
const FIELD: &str = "page_token";

/// The filters as one line of text (validated filter values hold no newline). The consent
/// filter is appended only when present, so tokens issued before it existed stay valid.
fn fingerprint(filter: &CustomerFilter) -> String {
    let mut text = format!(
        "stage={};tier={};segment={};min={}",
        filter.stage.as_deref().unwrap_or(""),
        filter.tier.as_deref().unwrap_or(""),
        filter.rfm_segment.as_deref().unwrap_or(""),
        filter
            .min_net_revenue_minor
            .map(|min| min.to_string())
            .unwrap_or_default(),
    );
    if let Some(purpose) = &filter.consent_purpose {
        text.push_str(";consent=");
        text.push_str(purpose);
    }
    text
}

/// The token that resumes after `last_id` under `filter`.
pub(crate) fn encode(filter: &CustomerFilter, last_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{VERSION}\n{}\n{last_id}", fingerprint(filter)))
}

/// The customer id to resume after; an empty token means the first page.
pub(crate) fn decode(token: &str, filter: &CustomerFilter) -> Result<Option<String>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let malformed = || ApiError::invalid(FIELD, "not a token returned by ListCustomers");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| malformed())?;
    let text = String::from_utf8(bytes).map_err(|_| malformed())?;
    let mut parts = text.splitn(3, '\n');
    let (Some(VERSION), Some(filters), Some(last_id)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    if last_id.is_empty() {
        return Err(malformed());
    }
    if filters != fingerprint(filter) {
        return Err(ApiError::invalid(
            FIELD,
            "was issued for different filters; repeat the first request's filters or start \
             again without a token",
        ));
    }
    Ok(Some(last_id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_risk() -> CustomerFilter {
        CustomerFilter {
            stage: Some("at_risk".into()),
            min_net_revenue_minor: Some(5_000),
            ..CustomerFilter::default()
        }
    }

    #[test]
    fn round_trips_ids_with_any_characters() {
        for id in ["c-1", "a\nb", "ünï|cødé;=", "x"] {
            let token = encode(&at_risk(), id);
            assert_eq!(decode(&token, &at_risk()).unwrap(), Some(id.to_owned()));
        }
        assert_eq!(decode("", &at_risk()).unwrap(), None);
    }

    #[test]
    fn tokens_are_bound_to_their_filters() {
        let token = encode(&at_risk(), "c-1");
        let mut other = at_risk();
        other.min_net_revenue_minor = Some(5_001);
        let error = decode(&token, &other).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("page_token: was issued for different filters")
        );
        let error = decode(&token, &CustomerFilter::default()).unwrap_err();
        assert!(matches!(
            error,
            ApiError::InvalidArgument {
                field: "page_token",
                ..
            }
        ));
    }

    #[test]
    fn garbage_is_refused() {
        for token in [
            "!!!",
            "bm90IGEgdG9rZW4",
            &URL_SAFE_NO_PAD.encode("v2\nx\ny"),
        ] {
            let error = decode(token, &at_risk()).unwrap_err();
            assert_eq!(
                error.to_string(),
                "page_token: not a token returned by ListCustomers",
                "{token}"
            );
        }
    }
}
