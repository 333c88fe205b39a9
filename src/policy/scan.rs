//! Pass 1 of loading a policy (`load.rs`): one walk over a YAML document that counts every
//! value (after alias expansion) and the nesting depth, and stops at the first limit crossed, so
//! alias bombs and deep nesting cost almost nothing; on the way it records what the envelope
//! check needs (`apiVersion`, `kind`, the top-level keys).

use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::load::{MAX_DEPTH, MAX_NODES};

/// What pass 1 learns about a document.
#[derive(Debug, Default)]
pub(super) struct Scan {
    pub(super) null: bool,
    pub(super) mapping: bool,
    pub(super) api_version: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) top_level_keys: Vec<String>,
}

pub(super) struct Scanner<'s> {
    nodes: &'s mut usize,
    depth: usize,
}

impl Scanner<'_> {
    pub(super) fn scan(document: serde_yaml::Deserializer<'_>) -> Result<Scan, serde_yaml::Error> {
        let mut nodes = 0;
        document.deserialize_any(TopVisitor {
            scanner: Scanner {
                nodes: &mut nodes,
                depth: 0,
            },
        })
    }

    fn count<E: de::Error>(&mut self) -> Result<(), E> {
        *self.nodes += 1;
        if *self.nodes > MAX_NODES {
            return Err(E::custom(format_args!(
                "more than {MAX_NODES} YAML values after expanding aliases \
                 (an alias bomb?); a policy needs far fewer"
            )));
        }
        Ok(())
    }

    fn child(&mut self) -> Scanner<'_> {
        Scanner {
            nodes: self.nodes,
            depth: self.depth + 1,
        }
    }

    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        self.count()?;
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "nested deeper than {MAX_DEPTH} levels; a policy needs far fewer"
            )));
        }
        Ok(())
    }
}

/// The root: records apiVersion, kind and the top-level keys, and scans the rest.
struct TopVisitor<'s> {
    scanner: Scanner<'s>,
}

impl<'de> Visitor<'de> for TopVisitor<'_> {
    type Value = Scan;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a ShiftPolicy mapping")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scan, E> {
        Ok(Scan {
            null: true,
            ..Scan::default()
        })
    }

    /// An empty document.
    fn visit_none<E: de::Error>(self) -> Result<Scan, E> {
        self.visit_unit()
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Scan, A::Error> {
        self.scanner.enter::<A::Error>()?;
        let mut scan = Scan {
            mapping: true,
            ..Scan::default()
        };
        while let Some(key) = map.next_key_seed(KeySeed {
            scanner: self.scanner.child(),
        })? {
            match key.as_deref() {
                Some("apiVersion") => {
                    self.scanner.count::<A::Error>()?;
                    scan.api_version = map.next_value_seed(ScalarText)?;
                }
                Some("kind") => {
                    self.scanner.count::<A::Error>()?;
                    scan.kind = map.next_value_seed(ScalarText)?;
                }
                _ => map.next_value_seed(self.scanner.child())?,
            }
            if scan.top_level_keys.len() < 100 {
                scan.top_level_keys
                    .push(key.unwrap_or_else(|| "<non-string key>".into()));
            }
        }
        Ok(scan)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, seq: A) -> Result<Scan, A::Error> {
        self.scanner.child().visit_seq(seq)?;
        Ok(Scan::default())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scan, E> {
        Ok(Scan::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Scan, E> {
        Ok(Scan::default())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Scan, E> {
        Ok(Scan::default())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scan, E> {
        Ok(Scan::default())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Scan, E> {
        Ok(Scan::default())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Scan, A::Error> {
        self.scanner.visit_enum(data)?;
        Ok(Scan::default())
    }
}

/// A mapping key: a string, or any other value (scanned and counted).
struct KeySeed<'s> {
    scanner: Scanner<'s>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<String>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<Self::Value, E> {
        self.scanner.count()?;
        Ok(Some(v.to_string()))
    }
    fn visit_bool<E: de::Error>(mut self, _: bool) -> Result<Self::Value, E> {
        self.scanner.count()?;
        Ok(None)
    }
    fn visit_i64<E: de::Error>(mut self, _: i64) -> Result<Self::Value, E> {
        self.scanner.count()?;
        Ok(None)
    }
    fn visit_u64<E: de::Error>(mut self, _: u64) -> Result<Self::Value, E> {
        self.scanner.count()?;
        Ok(None)
    }
    fn visit_f64<E: de::Error>(mut self, _: f64) -> Result<Self::Value, E> {
        self.scanner.count()?;
        Ok(None)
    }
    fn visit_unit<E: de::Error>(mut self) -> Result<Self::Value, E> {
        self.scanner.count()?;
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.scanner.visit_map(map)?;
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.scanner.visit_seq(seq)?;
        Ok(None)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.scanner.visit_enum(data)?;
        Ok(None)
    }
}

/// The text of a scalar (`apiVersion`, `kind`); other shapes read as "not the expected text".
pub(super) struct ScalarText;

impl<'de> DeserializeSeed<'de> for ScalarText {
    type Value = Option<String>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarText {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.chars().take(200).collect()))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    // Collections are bounded by the scan that already ran over this document.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Some("<a mapping>".into()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Some("<a list>".into()))
    }
}

impl<'de> DeserializeSeed<'de> for Scanner<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scanner<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(mut self, _: bool) -> Result<(), E> {
        self.count()
    }
    fn visit_i64<E: de::Error>(mut self, _: i64) -> Result<(), E> {
        self.count()
    }
    fn visit_u64<E: de::Error>(mut self, _: u64) -> Result<(), E> {
        self.count()
    }
    fn visit_f64<E: de::Error>(mut self, _: f64) -> Result<(), E> {
        self.count()
    }
    fn visit_str<E: de::Error>(mut self, _: &str) -> Result<(), E> {
        self.count()
    }
    fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
        self.count()
    }
    fn visit_none<E: de::Error>(mut self) -> Result<(), E> {
        self.count()
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.enter::<A::Error>()?;
        while seq.next_element_seed(self.child())?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.enter::<A::Error>()?;
        while map.next_key_seed(self.child())?.is_some() {
            map.next_value_seed(self.child())?;
        }
        Ok(())
    }

    /// Tagged values (`!foo bar`).
    fn visit_enum<A: de::EnumAccess<'de>>(mut self, data: A) -> Result<(), A::Error> {
        use de::VariantAccess as _;
        self.count::<A::Error>()?;
        let ((), variant) = data.variant_seed(self.child())?;
        variant.newtype_variant_seed(self.child())
    }
}
