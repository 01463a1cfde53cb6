//! Test support: a check of a type's JSON wire form, shared by the types that leave absent
//! fields out.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// `{}` reads as `T::default()`, which writes as exactly `empty` (the fields always written);
/// `full` (every field set) reads back and writes as itself.
pub(crate) fn assert_wire_form<T>(empty: Value, full: Value)
where
    T: Serialize + DeserializeOwned + Default + PartialEq + Debug,
{
    let read: T = serde_json::from_str("{}").unwrap();
    assert_eq!(read, T::default(), "`{{}}` reads as the default");
    assert_eq!(serde_json::to_value(&read).unwrap(), empty);
    let read: T = serde_json::from_value(full.clone()).unwrap();
    assert_eq!(serde_json::to_value(&read).unwrap(), full);
}
