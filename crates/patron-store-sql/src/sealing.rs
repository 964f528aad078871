//! Personal data in the event store, sealed under per-customer keys (crypto-shredding).
//!
//! With a master key configured, the personal fields of an event's payload — a feedback
//! `comment`, a profile's `traits`, the `identities` of `identities_linked` — are stored as
//! `{"$sealed": "<base64>"}`: XChaCha20-Poly1305 under the customer's data key, bound to the
//! customer and the event id. Data keys live only wrapped under the master key, in
//! `customer_keys`. Everything else (ids, types, times, amounts, NPS and CSAT scores, consent) is
//! stored as it is: the projections need it and it is not personal on its own.
//!
//! An `erasure_requested` event, in the transaction that appends it, deletes the customer's key,
//! scrubs the personal fields of the customer's earlier events in place (sealed or not, so a
//! database without a master key is erased too) and forgets those events' payload digests (a
//! digest of a short text is a way to confirm a guess). Afterwards the fields read back as erased:
//! `null` comment, empty traits or identities, and `"$erased": true` among the event's extra
//! fields; every copy of the ciphertext elsewhere (backups, replicas) is unreadable for good.
//! Events of the customer that come after the erasure get a new key.
//!
//! Reading tells three cases apart: a sealed field whose customer has no key is erased; one whose
//! key is there but no master key is configured (or the master key does not unwrap it) is an
//! error, never silently "erased".

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use patron_domain::EventType;
use patron_privacy::{DataKey, MasterKey};
use patron_store::{PlannedEvent, StoreError};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The key of a sealed field's object.
pub(crate) const SEALED: &str = "$sealed";
/// The extra field that marks an event whose personal data was erased.
pub(crate) const ERASED: &str = "$erased";

/// A personal field: its name and what it reads as once erased.
type PersonalField = (&'static str, fn() -> Value);

/// The top-level payload fields of `event_type` (as stored) that hold personal data.
fn personal_fields(event_type: &str) -> &'static [PersonalField] {
    personal_fields_of(&EventType::from_name(event_type))
}

/// The top-level payload fields of events of this type that hold personal data.
fn personal_fields_of(event_type: &EventType) -> &'static [PersonalField] {
    match event_type {
        EventType::Feedback => &[("comment", || Value::Null)],
        EventType::ProfileUpdated => &[("traits", || Value::Object(Map::new()))],
        EventType::IdentitiesLinked => &[("identities", || Value::Array(Vec::new()))],
        _ => &[],
    }
}

/// Whether events of this type can carry personal data.
pub(crate) fn is_personal(event_type: &str) -> bool {
    !personal_fields(event_type).is_empty()
}

/// The names of the event types that can carry personal data (`event_type` column values).
pub(crate) fn personal_types() -> Vec<&'static str> {
    EventType::KNOWN
        .iter()
        .filter(|t| !personal_fields_of(t).is_empty())
        .map(EventType::as_str)
        .collect()
}

/// What a sealed value is bound to: its customer and its event.
fn aad(customer_id: &str, event_id: &Uuid) -> Vec<u8> {
    format!("{customer_id}\n{event_id}").into_bytes()
}

fn backend(message: String) -> StoreError {
    StoreError::Backend(message.into())
}

fn object(payload: &str) -> Result<Map<String, Value>, StoreError> {
    match serde_json::from_str(payload) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(backend(
            "a personal-data payload is not a JSON object".into(),
        )),
        Err(e) => Err(backend(format!("a personal-data payload is not JSON: {e}"))),
    }
}

/// The payload with its personal fields sealed under `key`.
#[cfg(test)]
fn seal(
    event_type: &str,
    payload: &str,
    customer_id: &str,
    event_id: &Uuid,
    key: &DataKey,
) -> Result<String, StoreError> {
    let mut map = object(payload)?;
    seal_fields(&mut map, event_type, &aad(customer_id, event_id), key)?;
    Ok(Value::Object(map).to_string())
}

/// Seals the personal fields of a parsed payload under `key`, bound to `aad`.
fn seal_fields(
    map: &mut Map<String, Value>,
    event_type: &str,
    aad: &[u8],
    key: &DataKey,
) -> Result<(), StoreError> {
    for (field, _) in personal_fields(event_type) {
        let Some(value) = map.get_mut(*field).filter(|v| !v.is_null()) else {
            continue;
        };
        let plain = serde_json::to_vec(value).map_err(|e| backend(e.to_string()))?;
        let sealed = key
            .seal(aad, &plain)
            .map_err(|e| backend(format!("sealing personal data: {e}")))?;
        let mut envelope = Map::new();
        envelope.insert(SEALED.into(), Value::String(STANDARD.encode(sealed)));
        *value = Value::Object(envelope);
    }
    Ok(())
}

/// The key a stored event's sealed fields open with.
pub(crate) enum Opening<'a> {
    /// The customer's data key.
    Key(&'a DataKey),
    /// The customer has no key: erased.
    Erased,
}

/// The payload with its sealed fields opened, or replaced by their erased form (and the event
/// marked erased) where the key is gone or is not the one they were sealed under.
pub(crate) fn open(
    event_type: &str,
    payload: &str,
    customer_id: &str,
    event_id: &Uuid,
    opening: Opening<'_>,
) -> Result<String, StoreError> {
    let mut map = object(payload)?;
    let aad = aad(customer_id, event_id);
    let mut erased = false;
    for (field, erased_form) in personal_fields(event_type) {
        let Some(value) = map.get_mut(*field) else {
            continue;
        };
        let Some(sealed) = value.get(SEALED).and_then(Value::as_str) else {
            continue;
        };
        let opened = match &opening {
            Opening::Key(key) => STANDARD
                .decode(sealed)
                .ok()
                .and_then(|bytes| key.open(&aad, &bytes).ok())
                .and_then(|plain| serde_json::from_slice(&plain).ok()),
            Opening::Erased => None,
        };
        // A sealed value that does not open under the customer's current key was sealed under
        // one destroyed by an erasure (the customer got a new key afterwards).
        *value = opened.unwrap_or_else(|| {
            erased = true;
            erased_form()
        });
    }
    if erased {
        map.insert(ERASED.into(), Value::Bool(true));
    }
    Ok(Value::Object(map).to_string())
}

/// The payload without its personal data (sealed or not), marked erased; `None` when it holds
/// none.
pub(crate) fn scrub(event_type: &str, payload: &str) -> Result<Option<String>, StoreError> {
    let mut map = object(payload)?;
    let mut scrubbed = false;
    for (field, erased_form) in personal_fields(event_type) {
        if let Some(value) = map.get_mut(*field)
            && !value.is_null()
        {
            *value = erased_form();
            scrubbed = true;
        }
    }
    if !scrubbed {
        return Ok(None);
    }
    map.insert(ERASED.into(), Value::Bool(true));
    Ok(Some(Value::Object(map).to_string()))
}

/// Whether a parsed payload has a personal field with a value (a feedback without a comment has
/// nothing to seal, and its customer needs no key for it).
fn holds_personal_data(map: &Map<String, Value>, event_type: &str) -> bool {
    personal_fields(event_type)
        .iter()
        .any(|(field, _)| map.get(*field).is_some_and(|v| !v.is_null()))
}

/// Whether a stored payload may hold sealed fields (a cheap test before parsing).
pub(crate) fn may_be_sealed(event_type: &str, payload: &str) -> bool {
    is_personal(event_type) && payload.contains(SEALED)
}

/// The data keys of the customers on a page of stored events, unwrapped.
#[derive(Default)]
pub(crate) struct PageKeys {
    keys: HashMap<String, DataKey>,
}

impl PageKeys {
    /// Unwraps the stored keys (`customer_id`, wrapped key) with `master`. A stored key without
    /// a master key, or one the master key does not unwrap, is an error: the data is there and
    /// must not pass for erased.
    pub(crate) fn from_stored(
        master: Option<&MasterKey>,
        stored: Vec<(String, Vec<u8>)>,
    ) -> Result<Self, StoreError> {
        let mut keys = HashMap::with_capacity(stored.len());
        for (customer_id, wrapped) in stored {
            let Some(master) = master else {
                return Err(backend(format!(
                    "the events of customer {customer_id} hold sealed personal data: configure \
                     the master key (--master-key-file or PATRON_MASTER_KEY) to read them"
                )));
            };
            let key = master.unwrap(&customer_id, &wrapped).map_err(|e| {
                backend(format!(
                    "the data key of customer {customer_id} does not unwrap under master key {} \
                     (is it the key the data was written with?): {e}",
                    master.id()
                ))
            })?;
            keys.insert(customer_id, key);
        }
        Ok(Self { keys })
    }

    /// How the sealed fields of `customer_id`'s events open.
    pub(crate) fn opening(&self, customer_id: &str) -> Opening<'_> {
        self.keys
            .get(customer_id)
            .map_or(Opening::Erased, Opening::Key)
    }
}

/// What sealing a batch's events does to `customer_keys`, in this order: delete the keys of
/// customers erased in the batch, then insert the new keys.
#[derive(Default)]
pub(crate) struct KeyChanges {
    /// Customers whose key the batch destroys (each with the position of its erasure).
    pub(crate) erased: Vec<(String, i64)>,
    /// New keys to store: customer and wrapped key.
    pub(crate) created: Vec<(String, Vec<u8>)>,
}

/// Seals the personal fields of `events` (in position order) with their customers' keys:
/// `stored` holds the wrapped keys already in the database for the customers of personal-data
/// events; missing ones are created. An `erasure_requested` event retires its customer's key, so
/// later events of the customer in the batch get a new one. Without a master key nothing is
/// sealed, but erasures are still reported.
pub(crate) fn seal_batch(
    master: Option<&Arc<MasterKey>>,
    events: &mut [PlannedEvent<'_>],
    stored: Vec<(String, Vec<u8>)>,
) -> Result<KeyChanges, StoreError> {
    let mut changes = KeyChanges::default();
    // Each customer's current key, and whether this batch created it.
    let mut keys: HashMap<String, (DataKey, bool)> =
        PageKeys::from_stored(master.map(Arc::as_ref), stored)?
            .keys
            .into_iter()
            .map(|(customer_id, key)| (customer_id, (key, false)))
            .collect();
    for planned in events.iter_mut() {
        let event = planned.event;
        let customer_id = event.customer_id.as_str();
        if event.event_type() == EventType::ErasureRequested {
            let position = i64::try_from(planned.position.0).unwrap_or(i64::MAX);
            changes.erased.push((customer_id.to_owned(), position));
            keys.remove(customer_id);
            continue;
        }
        if master.is_none() {
            continue;
        }
        let kind = event.event_type();
        let event_type = kind.as_str();
        if !is_personal(event_type) {
            continue;
        }
        let mut map = object(&planned.payload)?;
        if !holds_personal_data(&map, event_type) {
            continue;
        }
        let (key, _) = match keys.entry(customer_id.to_owned()) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let key = DataKey::generate().map_err(|e| backend(e.to_string()))?;
                entry.insert((key, true))
            }
        };
        seal_fields(
            &mut map,
            event_type,
            &aad(customer_id, &event.event_id),
            key,
        )?;
        planned.payload = Value::Object(map).to_string();
    }
    if let Some(master) = master {
        for (customer_id, (key, new)) in &keys {
            if *new {
                let wrapped = master
                    .wrap(customer_id, key)
                    .map_err(|e| backend(format!("wrapping a data key: {e}")))?;
                changes.created.push((customer_id.clone(), wrapped));
            }
        }
    }
    Ok(changes)
}

/// The customers of a batch's personal-data events (whose keys to look up).
pub(crate) fn personal_customers(events: &[PlannedEvent<'_>]) -> Vec<String> {
    let mut customers: Vec<String> = events
        .iter()
        .filter(|p| !personal_fields_of(&p.event.event_type()).is_empty())
        .map(|p| p.event.customer_id.as_str().to_owned())
        .collect();
    customers.sort_unstable();
    customers.dedup();
    customers
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const FEEDBACK: &str = r#"{"nps":9,"comment":"call me on +44 7700 900123"}"#;

    #[test]
    fn sealed_fields_open_with_their_key_only() {
        let key = DataKey::generate().unwrap();
        let id = Uuid::new_v4();
        let sealed = seal("feedback", FEEDBACK, "c-1", &id, &key).unwrap();
        assert!(!sealed.contains("7700"), "{sealed}");
        assert!(
            sealed.contains(r#""nps":9"#),
            "scores stay readable: {sealed}"
        );
        assert!(may_be_sealed("feedback", &sealed));
        let opened = open("feedback", &sealed, "c-1", &id, Opening::Key(&key)).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&opened).unwrap(),
            serde_json::from_str::<Value>(FEEDBACK).unwrap()
        );
        // Another customer's or event's seal does not open (moved ciphertext).
        let moved = open("feedback", &sealed, "c-2", &id, Opening::Key(&key)).unwrap();
        assert!(moved.contains(r#""$erased":true"#) && !moved.contains("7700"));
        let other = DataKey::generate().unwrap();
        let rekeyed = open("feedback", &sealed, "c-1", &id, Opening::Key(&other)).unwrap();
        assert!(rekeyed.contains(r#""comment":null"#), "{rekeyed}");
        let erased = open("feedback", &sealed, "c-1", &id, Opening::Erased).unwrap();
        assert!(erased.contains(r#""$erased":true"#), "{erased}");
    }

    #[test]
    fn scrubbing_removes_personal_fields_sealed_or_not() {
        let scrubbed = scrub("feedback", FEEDBACK).unwrap().unwrap();
        assert!(!scrubbed.contains("7700") && scrubbed.contains(r#""nps":9"#));
        let profile = r#"{"traits":{"email":"ada@example.com"}}"#;
        let scrubbed = scrub("profile_updated", profile).unwrap().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&scrubbed).unwrap(),
            serde_json::json!({"traits": {}, "$erased": true})
        );
        assert_eq!(scrub("feedback", r#"{"nps":3}"#).unwrap(), None);
        assert_eq!(scrub("purchase", r#"{"order_id":"o"}"#).unwrap(), None);
    }

    #[test]
    fn an_erasure_in_the_batch_retires_the_key_its_earlier_events_were_sealed_with() {
        use patron_domain::{CustomerId, Event, EventBody};
        use patron_store::Position;
        let master = Arc::new(MasterKey::generate().unwrap());
        let at = chrono::DateTime::UNIX_EPOCH;
        let event = |event_type: &str, payload: &str| Event {
            event_id: Uuid::new_v4(),
            customer_id: CustomerId::parse("c-1").unwrap(),
            occurred_at: at,
            source: "test".into(),
            body: EventBody::from_payload_str(event_type, payload).unwrap(),
        };
        let events = [
            event("feedback", r#"{"comment":"before"}"#),
            event("erasure_requested", "{}"),
            event("feedback", r#"{"comment":"after"}"#),
        ];
        let mut planned: Vec<PlannedEvent<'_>> = events
            .iter()
            .enumerate()
            .map(|(i, e)| PlannedEvent {
                position: Position(i as u64 + 1),
                version: i as u64 + 1,
                event: e,
                payload: e.body.to_payload_string(),
                digest: e.digest(),
            })
            .collect();
        let changes = seal_batch(Some(&master), &mut planned, Vec::new()).unwrap();
        assert_eq!(changes.erased, [("c-1".to_owned(), 2)]);
        assert_eq!(
            changes.created.len(),
            1,
            "only the key after the erasure is kept"
        );
        let key = master.unwrap("c-1", &changes.created[0].1).unwrap();
        let open_comment = |p: &PlannedEvent<'_>| {
            let opened = open(
                "feedback",
                &p.payload,
                "c-1",
                &p.event.event_id,
                Opening::Key(&key),
            );
            serde_json::from_str::<Value>(&opened.unwrap()).unwrap()["comment"].clone()
        };
        assert_eq!(
            open_comment(&planned[0]),
            Value::Null,
            "sealed under the retired key"
        );
        assert_eq!(open_comment(&planned[2]), "after");
        assert!(!planned[0].payload.contains("before"));
    }

    #[test]
    fn nothing_to_seal_creates_no_key() {
        use patron_domain::{CustomerId, Event, EventBody};
        let master = Arc::new(MasterKey::generate().unwrap());
        let event = Event {
            event_id: Uuid::new_v4(),
            customer_id: CustomerId::parse("c-1").unwrap(),
            occurred_at: chrono::DateTime::UNIX_EPOCH,
            source: "test".into(),
            body: EventBody::from_payload_str("feedback", r#"{"nps":7}"#).unwrap(),
        };
        let mut planned = vec![PlannedEvent {
            position: patron_store::Position(1),
            version: 1,
            event: &event,
            payload: event.body.to_payload_string(),
            digest: event.digest(),
        }];
        let before = planned[0].payload.clone();
        let changes = seal_batch(Some(&master), &mut planned, Vec::new()).unwrap();
        assert!(changes.created.is_empty());
        assert_eq!(planned[0].payload, before);
    }

    #[test]
    fn a_stored_key_without_the_master_key_is_an_error_not_an_erasure() {
        let master = MasterKey::generate().unwrap();
        let key = DataKey::generate().unwrap();
        let wrapped = master.wrap("c-1", &key).unwrap();
        let error = PageKeys::from_stored(None, vec![("c-1".into(), wrapped.clone())])
            .err()
            .unwrap();
        assert!(error.to_string().contains("master key"), "{error}");
        let wrong = MasterKey::generate().unwrap();
        assert!(
            PageKeys::from_stored(Some(&wrong), vec![("c-1".into(), wrapped.clone())]).is_err()
        );
        let keys = PageKeys::from_stored(Some(&master), vec![("c-1".into(), wrapped)]).unwrap();
        assert!(matches!(keys.opening("c-1"), Opening::Key(_)));
        assert!(matches!(keys.opening("c-2"), Opening::Erased));
    }
}
