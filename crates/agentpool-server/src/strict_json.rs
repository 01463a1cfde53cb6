//! What every JSON body must satisfy before it is read into a request type: no object with the
//! same key twice (serde would keep the last one silently, so two parts of a system could read
//! different values from one body) and no NUL character in any string or key (PostgreSQL text
//! cannot hold it, SQLite can: refusing it here makes both backends answer the same, 422).

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize as _;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Walks a JSON document and fails on the first duplicate key or NUL character; builds nothing
/// but whether the document is an object.
pub(crate) struct Strict {
    pub(crate) is_object: bool,
}

impl Strict {
    const OBJECT: Strict = Strict { is_object: true };
    const OTHER: Strict = Strict { is_object: false };
}

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

fn no_nul<E: de::Error>(s: &str) -> Result<(), E> {
    if s.contains('\0') {
        Err(E::custom("must not contain NUL characters"))
    } else {
        Ok(())
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Strict, E> {
        Ok(Strict::OTHER)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Strict, E> {
        Ok(Strict::OTHER)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Strict, E> {
        Ok(Strict::OTHER)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Strict, E> {
        Ok(Strict::OTHER)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Strict, E> {
        Ok(Strict::OTHER)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Strict, E> {
        no_nul(s).map(|()| Strict::OTHER)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        while seq.next_element::<Strict>()?.is_some() {}
        Ok(Strict::OTHER)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            no_nul(&key)?;
            // The value is read first so that the error path names the repeated key.
            map.next_value_seed(KeyCheck {
                fresh: seen.insert(key),
            })?;
        }
        Ok(Strict::OBJECT)
    }
}

/// A map value whose key was (or was not) already seen in the same object.
struct KeyCheck {
    fresh: bool,
}

impl<'de> DeserializeSeed<'de> for KeyCheck {
    type Value = Strict;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Strict, D::Error> {
        let v = Strict::deserialize(d)?;
        if self.fresh {
            Ok(v)
        } else {
            Err(de::Error::custom("the key appears more than once in its object"))
        }
    }
}
