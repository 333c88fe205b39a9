//! Durations and resource quantities as users write them (`15s`, `14d`, `500m`, `384Gi`),
//! parsed once at load time so the rest of the code works with plain numbers.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube_quantity::ParsedQuantity;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A duration written like `15s`, `5m`, `1h30m`, `14d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyDuration(pub Duration);

impl PolicyDuration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
    pub fn as_secs(&self) -> u64 {
        self.0.as_secs()
    }
    pub fn as_secs_f64(&self) -> f64 {
        self.0.as_secs_f64()
    }
}

/// Longest duration accepted anywhere in a policy; keeps arithmetic on durations far from
/// overflow and catches typos such as `14000d`.
pub const MAX_DURATION_SECS: u64 = 10 * 365 * 86_400;

impl std::str::FromStr for PolicyDuration {
    type Err = String;
    /// The grammar is the CRD's `pattern` (Prometheus style: `1h30m`, `500ms`, `14d`), not
    /// humantime's looser one, so a file that passes `tideshift check` also passes
    /// `kubectl apply`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hint = "write it like 15s, 5m, 1h30m or 14d (units ms, s, m, h, d, w)";
        let text = s.trim();
        if text.is_empty() {
            return Err(format!("empty duration; {hint}"));
        }
        let mut total_ns: u128 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 12 {
                return Err(format!("invalid duration {text:?}; {hint}"));
            }
            let amount: u128 = rest[..digits]
                .parse()
                .map_err(|_| format!("invalid duration {text:?}; {hint}"))?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit_ns: u128 = match &rest[..unit_len] {
                "ns" => 1,
                "us" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60 * 1_000_000_000,
                "h" => 3_600 * 1_000_000_000,
                "d" => 86_400 * 1_000_000_000,
                "w" => 7 * 86_400 * 1_000_000_000,
                "" => return Err(format!("duration {text:?} has no unit; {hint}")),
                other => {
                    return Err(format!(
                        "duration {text:?} has an unknown unit {other:?}; {hint}"
                    ));
                }
            };
            rest = &rest[unit_len..];
            total_ns = total_ns.saturating_add(amount.saturating_mul(unit_ns));
        }
        if total_ns > u128::from(MAX_DURATION_SECS) * 1_000_000_000 {
            return Err(format!("duration {text:?} is longer than 10 years; {hint}"));
        }
        let secs = (total_ns / 1_000_000_000) as u64;
        let nanos = (total_ns % 1_000_000_000) as u32;
        Ok(PolicyDuration(Duration::new(secs, nanos)))
    }
}

impl fmt::Display for PolicyDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Same grammar as the parser, so a serialized policy reads back unchanged.
        let total_ns = self.0.as_nanos();
        if total_ns == 0 {
            return f.write_str("0s");
        }
        let mut rest = total_ns;
        for (unit, ns) in [
            ("d", 86_400_000_000_000u128),
            ("h", 3_600_000_000_000),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
            ("ns", 1),
        ] {
            let amount = rest / ns;
            if amount > 0 {
                write!(f, "{amount}{unit}")?;
                rest -= amount * ns;
            }
        }
        Ok(())
    }
}

impl Serialize for PolicyDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PolicyDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for PolicyDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^([0-9]+(ns|us|ms|s|m|h|d|w))+$",
            "maxLength": 64,
            "description": "A duration such as 15s, 5m, 1h30m or 14d."
        })
    }
}

/// Parse a Kubernetes quantity (`96`, `500m`, `384Gi`, `1e3`) into base units (cores or bytes).
pub fn parse_quantity(s: &str) -> Result<f64, String> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err("empty quantity".into());
    }
    let parsed = ParsedQuantity::try_from(trimmed).map_err(|e| {
        format!("invalid quantity {trimmed:?} ({e}); write it like 96, 500m or 384Gi")
    })?;
    let value = parsed
        .to_bytes_f64()
        .ok_or_else(|| format!("quantity {trimmed:?} is out of range"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!(
            "quantity {trimmed:?} must be a finite, non-negative amount"
        ));
    }
    Ok(value)
}

/// Accepts both `cpu: 4` and `cpu: "4"` as Kubernetes does.
fn quantity_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrString {
        Int(i64),
        Float(f64),
        Str(String),
    }
    Ok(match IntOrString::deserialize(d)? {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::Float(f) => f.to_string(),
        IntOrString::Str(s) => s,
    })
}

fn quantity_schema() -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "maxLength": 64,
        "pattern": "^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$"
    })
}

macro_rules! quantity_type {
    ($name:ident, $unit:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            /// As written, so the object round-trips unchanged.
            pub text: String,
            /// In base units.
            pub value: f64,
        }

        impl $name {
            pub fn new(value: f64) -> Self {
                Self {
                    text: Quantity(value.to_string()).0,
                    value,
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(Self {
                    text: s.trim().to_string(),
                    value: parse_quantity(s)?,
                })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.text)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                quantity_string(d)?.parse().map_err(de::Error::custom)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                $unit.into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                quantity_schema()
            }
        }
    };
}

quantity_type!(
    Cpu,
    "CpuQuantity",
    "CPU in cores, written as a Kubernetes quantity (`4`, `500m`)."
);
quantity_type!(
    Memory,
    "MemoryQuantity",
    "Memory in bytes, written as a Kubernetes quantity (`384Gi`)."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_users_write_them() {
        assert_eq!("15s".parse::<PolicyDuration>().unwrap().as_secs(), 15);
        assert_eq!("1h30m".parse::<PolicyDuration>().unwrap().as_secs(), 5400);
        assert_eq!(
            "14d".parse::<PolicyDuration>().unwrap().as_secs(),
            14 * 86_400
        );
        assert!("fast".parse::<PolicyDuration>().is_err());
        assert!("".parse::<PolicyDuration>().is_err());
        assert!("-5s".parse::<PolicyDuration>().is_err());
        assert!("5".parse::<PolicyDuration>().is_err());
        assert!("5min".parse::<PolicyDuration>().is_err());
        assert!("1.5h".parse::<PolicyDuration>().is_err());
        assert!("99999999999999999999d".parse::<PolicyDuration>().is_err());
        assert!("4000w".parse::<PolicyDuration>().is_err());
        assert_eq!(
            "500ms".parse::<PolicyDuration>().unwrap().0.as_millis(),
            500
        );
        assert_eq!("0s".parse::<PolicyDuration>().unwrap().as_secs(), 0);
        for text in ["14d", "1h30m", "1d2h3m4s5ms", "0s", "15s"] {
            let parsed: PolicyDuration = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
        }
    }

    #[test]
    fn quantities_parse_to_base_units() {
        assert_eq!("500m".parse::<Cpu>().unwrap().value, 0.5);
        assert_eq!("96".parse::<Cpu>().unwrap().value, 96.0);
        assert_eq!(
            "1Gi".parse::<Memory>().unwrap().value,
            1024.0 * 1024.0 * 1024.0
        );
        assert!("lots".parse::<Memory>().is_err());
        assert!("-1".parse::<Cpu>().is_err());
    }
}
