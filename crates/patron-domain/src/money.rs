//! Money in integer minor units of an ISO 4217 currency. Never a float.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest absolute amount, in minor units, that a single event may carry.
///
/// 10^15 minor units is ten trillion in a two-decimal currency: far beyond any real order, yet
/// small enough that millions of them can be summed in an `i64` without overflow.
pub const MAX_ABS_MINOR_UNITS: i64 = 1_000_000_000_000_000;

/// An ISO 4217 currency, identified by its alphabetic code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// Looks a currency up by its three-letter code (case-sensitive, as ISO 4217 writes it).
    pub fn from_code(code: &str) -> Result<Self, MoneyError> {
        iso_currency::Currency::from_code(code)
            .map(Self)
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))
    }

    /// The three-letter alphabetic code, e.g. `EUR`.
    pub fn code(&self) -> &'static str {
        self.0.code()
    }

    /// How many decimal digits the minor unit has (2 for EUR, 0 for JPY, 3 for KWD).
    pub fn minor_unit_digits(&self) -> u16 {
        self.0.exponent().unwrap_or(0)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_code(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Self::from_code(&code).map_err(serde::de::Error::custom)
    }
}

/// Why an amount of money was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The code is not an ISO 4217 currency.
    #[error("unknown currency code {0:?} (expected an ISO 4217 code such as EUR)")]
    UnknownCurrency(String),
    /// The amount is outside ±[`MAX_ABS_MINOR_UNITS`].
    #[error(
        "amount {0} minor units is out of range (at most {MAX_ABS_MINOR_UNITS} in absolute value)"
    )]
    OutOfRange(i64),
    /// Two amounts of different currencies were combined.
    #[error("cannot combine {0} with {1}")]
    CurrencyMismatch(Currency, Currency),
    /// A sum overflowed.
    #[error("amount overflowed")]
    Overflow,
}

/// An amount of money: integer minor units (cents, pence, yen) of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Amount in minor units; may be negative only where the domain says so (never in events).
    pub minor_units: i64,
    /// The currency the amount is in.
    pub currency: Currency,
}

impl Money {
    /// Builds an amount, refusing anything beyond ±[`MAX_ABS_MINOR_UNITS`].
    pub fn new(minor_units: i64, currency: Currency) -> Result<Self, MoneyError> {
        if minor_units
            .checked_abs()
            .is_none_or(|abs| abs > MAX_ABS_MINOR_UNITS)
        {
            return Err(MoneyError::OutOfRange(minor_units));
        }
        Ok(Self {
            minor_units,
            currency,
        })
    }

    /// Zero in the given currency.
    pub fn zero(currency: Currency) -> Self {
        Self {
            minor_units: 0,
            currency,
        }
    }

    /// Adds two amounts of the same currency.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        let minor_units = self
            .minor_units
            .checked_add(other.minor_units)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money {
            minor_units,
            currency: self.currency,
        })
    }

    /// Subtracts an amount of the same currency.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.checked_add(Money {
            minor_units: other
                .minor_units
                .checked_neg()
                .ok_or(MoneyError::Overflow)?,
            currency: other.currency,
        })
    }
}

impl fmt::Display for Money {
    /// Formats as a decimal in major units with the currency code, e.g. `19.99 EUR`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = u32::from(self.currency.minor_unit_digits());
        let sign = if self.minor_units < 0 { "-" } else { "" };
        let abs = self.minor_units.unsigned_abs();
        if digits == 0 {
            return write!(f, "{sign}{abs} {}", self.currency);
        }
        let scale = 10u64.pow(digits);
        let width = digits as usize;
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            abs / scale,
            abs % scale,
            self.currency
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        Currency::from_code("EUR").unwrap()
    }

    #[test]
    fn currency_codes_are_iso_4217() {
        assert_eq!(eur().code(), "EUR");
        assert_eq!(eur().minor_unit_digits(), 2);
        assert_eq!(Currency::from_code("JPY").unwrap().minor_unit_digits(), 0);
        assert_eq!(Currency::from_code("KWD").unwrap().minor_unit_digits(), 3);
        assert_eq!(
            Currency::from_code("XYZ"),
            Err(MoneyError::UnknownCurrency("XYZ".into()))
        );
        assert!(Currency::from_code("eur").is_err(), "codes are upper case");
    }

    #[test]
    fn money_is_bounded() {
        assert!(Money::new(MAX_ABS_MINOR_UNITS, eur()).is_ok());
        assert!(Money::new(-MAX_ABS_MINOR_UNITS, eur()).is_ok());
        assert_eq!(
            Money::new(MAX_ABS_MINOR_UNITS + 1, eur()),
            Err(MoneyError::OutOfRange(MAX_ABS_MINOR_UNITS + 1))
        );
        assert_eq!(
            Money::new(i64::MIN, eur()),
            Err(MoneyError::OutOfRange(i64::MIN))
        );
    }

    #[test]
    fn arithmetic_checks_currency_and_overflow() {
        let usd = Currency::from_code("USD").unwrap();
        let a = Money::new(1999, eur()).unwrap();
        let b = Money::new(1, eur()).unwrap();
        assert_eq!(a.checked_add(b).unwrap().minor_units, 2000);
        assert_eq!(a.checked_sub(b).unwrap().minor_units, 1998);
        assert_eq!(
            a.checked_add(Money::zero(usd)),
            Err(MoneyError::CurrencyMismatch(eur(), usd))
        );
        let max = Money {
            minor_units: i64::MAX,
            currency: eur(),
        };
        assert_eq!(max.checked_add(b), Err(MoneyError::Overflow));
    }

    #[test]
    fn display_uses_the_currency_exponent() {
        assert_eq!(Money::new(1999, eur()).unwrap().to_string(), "19.99 EUR");
        assert_eq!(Money::new(-5, eur()).unwrap().to_string(), "-0.05 EUR");
        let jpy = Currency::from_code("JPY").unwrap();
        assert_eq!(Money::new(1200, jpy).unwrap().to_string(), "1200 JPY");
        let kwd = Currency::from_code("KWD").unwrap();
        assert_eq!(Money::new(1005, kwd).unwrap().to_string(), "1.005 KWD");
    }

    #[test]
    fn serde_round_trip_keeps_integers() {
        let m = Money::new(1999, eur()).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"minor_units":1999,"currency":"EUR"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
    }
}
