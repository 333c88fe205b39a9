//! Where in a policy's text a field path is: the line an error names. Best effort, by walking
//! the document and raising an error at the node (serde_yaml marks errors with the position of
//! the current node).

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::scan::ScalarText;

/// One step of a field path such as `spec.online[1].replicas.max`.
#[derive(Debug, PartialEq)]
pub(super) enum Segment {
    Key(String),
    Index(usize),
}

pub(super) fn parse_path(path: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => part.split_at(i),
            None => (part, ""),
        };
        if !key.is_empty() {
            segments.push(Segment::Key(key.to_string()));
        }
        // Paths can quote user text (an unknown top-level key such as `s[]]x`), so a `]`
        // need not follow a `[`: look for each `[`, then its `]`.
        while let Some(open) = rest.find('[') {
            let Some(close) = rest[open..].find(']').map(|c| open + c) else {
                break;
            };
            if let Ok(index) = rest[open + 1..close].parse() {
                segments.push(Segment::Index(index));
            }
            rest = &rest[close + 1..];
        }
    }
    segments
}

/// The 1-based line of the deepest existing node on `path`, found by walking the document and
/// raising an error there (serde_yaml marks errors with the position of the current node).
pub(super) fn locate(text: &str, path: &str) -> Option<usize> {
    const HERE: &str = "\u{0}located";
    let segments = parse_path(path);
    for document in serde_yaml::Deserializer::from_str(text) {
        let seed = Locate {
            segments: &segments,
            here: HERE,
            root: true,
        };
        if let Err(e) = seed.deserialize(document)
            && e.to_string().contains(HERE)
        {
            return e.location().map(|l| l.line());
        }
    }
    None
}

struct Locate<'p> {
    segments: &'p [Segment],
    here: &'static str,
    /// An empty document at the root is skipped, not located.
    root: bool,
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if let Some((Segment::Key(wanted), rest)) = self.segments.split_first() {
            while let Some(key) = map.next_key::<KeyText>()? {
                if key.0.as_deref() == Some(wanted.as_str()) {
                    return map.next_value_seed(Locate {
                        segments: rest,
                        here: self.here,
                        root: false,
                    });
                }
                map.next_value::<IgnoredAny>()?;
            }
        }
        Err(de::Error::custom(self.here))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some((Segment::Index(wanted), rest)) = self.segments.split_first() {
            let mut index = 0;
            loop {
                if index == *wanted {
                    return match seq.next_element_seed(Locate {
                        segments: rest,
                        here: self.here,
                        root: false,
                    })? {
                        Some(()) => Ok(()),
                        None => Err(de::Error::custom(self.here)),
                    };
                }
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
                index += 1;
            }
        }
        Err(de::Error::custom(self.here))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(self.here))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(self.here))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(self.here))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(self.here))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(self.here))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        if self.root {
            return Ok(());
        }
        Err(E::custom(self.here))
    }
}

struct KeyText(Option<String>);

impl<'de> serde::Deserialize<'de> for KeyText {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(KeyText(ScalarText.deserialize(d)?))
    }
}
