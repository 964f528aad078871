//! Consent per purpose: each customer's latest answer for every purpose they were asked about.
//!
//! A purpose nobody asked about is *unknown*, which marketing must treat like a refusal: only an
//! explicit grant puts a customer in an audience. Answers are ordered by event time, so a late
//! `consent_changed` does not overrule a newer one (ties go to the later event in the log); the
//! fold is a function of the log, so a rebuild gives the same answers as live processing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use patron_domain::{Event, EventBody};
use serde::{Deserialize, Serialize};

/// Most purposes kept per customer. A purpose beyond these is not projected (the event stays in
/// the store): purposes are a short list chosen by the business, and a producer that invents
/// them per event must not grow a customer's view without bound.
pub const MAX_PURPOSES: usize = 64;

/// A customer's latest answer for one purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Whether consent is given.
    pub granted: bool,
    /// The event time of the answer.
    pub at: DateTime<Utc>,
}

/// Every purpose a customer answered, with the latest answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Consents(BTreeMap<String, Answer>);

impl Consents {
    /// Folds a `consent_changed` event in (other events change nothing); returns whether the
    /// answers changed.
    pub fn apply(&mut self, event: &Event) -> bool {
        let EventBody::ConsentChanged(change) = &event.body else {
            return false;
        };
        let answer = Answer {
            granted: change.granted,
            at: event.occurred_at,
        };
        let full = self.0.len() >= MAX_PURPOSES;
        match self.0.get_mut(&change.purpose) {
            Some(current) if current.at > answer.at || *current == answer => false,
            Some(current) => {
                *current = answer;
                true
            }
            None if full => false,
            None => {
                self.0.insert(change.purpose.clone(), answer);
                true
            }
        }
    }

    /// The answers of several customers taken as one's: per purpose the latest answer by event
    /// time, at equal times a grant over a refusal (so the result does not depend on the order
    /// of `parts`). At most [`MAX_PURPOSES`] are kept, the first by purpose name.
    pub fn combine<'a>(parts: impl IntoIterator<Item = &'a Consents>) -> Consents {
        let mut answers: BTreeMap<String, Answer> = BTreeMap::new();
        for part in parts {
            for (purpose, answer) in &part.0 {
                match answers.get_mut(purpose) {
                    Some(current) => {
                        if (answer.at, answer.granted) > (current.at, current.granted) {
                            *current = *answer;
                        }
                    }
                    None => {
                        answers.insert(purpose.clone(), *answer);
                    }
                }
            }
        }
        while answers.len() > MAX_PURPOSES {
            answers.pop_last();
        }
        Consents(answers)
    }

    /// Whether no purpose has an answer.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every answered purpose with its latest answer, by purpose name.
    pub fn answers(&self) -> impl Iterator<Item = (&str, &Answer)> {
        self.0
            .iter()
            .map(|(purpose, answer)| (purpose.as_str(), answer))
    }

    /// Whether consent for `purpose` is given (an unknown purpose is not).
    pub fn granted(&self, purpose: &str) -> bool {
        self.0.get(purpose).is_some_and(|answer| answer.granted)
    }

    /// Purpose → granted, for marking what is published.
    pub fn marks(&self) -> BTreeMap<String, bool> {
        self.0
            .iter()
            .map(|(purpose, answer)| (purpose.clone(), answer.granted))
            .collect()
    }

    /// The granted purposes as one searchable text, each followed by a space and the whole
    /// preceded by one (` email sms `), so that `' ' || purpose || ' '` finds exactly one purpose;
    /// `None` when none is granted. Purpose names hold no spaces (see
    /// [`patron_domain::is_purpose_name`]).
    pub fn granted_list(&self) -> Option<String> {
        let mut list = String::new();
        for (purpose, answer) in &self.0 {
            if answer.granted {
                if list.is_empty() {
                    list.push(' ');
                }
                list.push_str(purpose);
                list.push(' ');
            }
        }
        (!list.is_empty()).then_some(list)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use patron_domain::{ConsentChanged, CustomerId};

    use super::*;

    fn change(purpose: &str, granted: bool, day: u32) -> Event {
        Event {
            event_id: uuid::Uuid::new_v4(),
            customer_id: CustomerId::parse("c-1").unwrap(),
            occurred_at: Utc.with_ymd_and_hms(2026, 1, day, 0, 0, 0).unwrap(),
            source: "test".into(),
            body: EventBody::ConsentChanged(ConsentChanged {
                purpose: purpose.into(),
                granted,
                extra: Default::default(),
            }),
        }
    }

    #[test]
    fn the_latest_answer_by_event_time_wins() {
        let mut consents = Consents::default();
        assert!(consents.apply(&change("sms", true, 5)));
        assert!(
            !consents.apply(&change("sms", false, 4)),
            "an older answer arriving late changes nothing"
        );
        assert!(consents.granted("sms"));
        assert!(consents.apply(&change("sms", false, 6)));
        assert!(!consents.granted("sms"));
        assert!(
            !consents.apply(&change("sms", false, 6)),
            "a repeat is no change"
        );
        assert!(
            !consents.granted("marketing_email"),
            "unknown is not granted"
        );
    }

    #[test]
    fn the_granted_list_finds_exactly_one_purpose() {
        let mut consents = Consents::default();
        assert_eq!(consents.granted_list(), None);
        consents.apply(&change("email", true, 1));
        consents.apply(&change("marketing_email", false, 1));
        consents.apply(&change("sms", true, 1));
        assert_eq!(consents.granted_list().as_deref(), Some(" email sms "));
        assert_eq!(
            consents.marks(),
            BTreeMap::from([
                ("email".to_owned(), true),
                ("marketing_email".to_owned(), false),
                ("sms".to_owned(), true),
            ])
        );
    }

    #[test]
    fn combined_answers_are_the_latest_per_purpose_whatever_the_order() {
        let mut a = Consents::default();
        a.apply(&change("sms", true, 5));
        a.apply(&change("email", false, 3));
        a.apply(&change("post", false, 7));
        let mut b = Consents::default();
        b.apply(&change("sms", false, 6));
        b.apply(&change("email", true, 2));
        b.apply(&change("post", true, 7));
        b.apply(&change("push", true, 1));
        let mut all = Consents::default();
        for event in [
            change("push", true, 1),
            change("email", true, 2),
            change("email", false, 3),
            change("sms", true, 5),
            change("sms", false, 6),
            change("post", false, 7),
            change("post", true, 7),
        ] {
            all.apply(&event);
        }
        assert_eq!(Consents::combine([&a, &b]), all);
        assert_eq!(
            Consents::combine([&b, &a]),
            all,
            "order does not matter; a tie goes to the grant"
        );
        assert_eq!(Consents::combine([&a]), a, "one part is itself");
        assert!(Consents::combine([]).is_empty());
    }

    #[test]
    fn purposes_per_customer_are_bounded() {
        let mut consents = Consents::default();
        for i in 0..MAX_PURPOSES + 10 {
            consents.apply(&change(&format!("p{i}"), true, 1));
        }
        assert_eq!(consents.answers().count(), MAX_PURPOSES);
        assert!(
            consents.apply(&change("p0", false, 2)),
            "known purposes still change"
        );
    }
}
