//! An answer's `returnData`: JSON a handler built, or a flat object written straight from its fields — what a
//! token or ticket answer is, on the hottest path there is — without building a JSON map to serialize.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

/// An answer's `returnData`.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Json(Value),
    Flat(Flat),
}

/// A flat object: up to three string fields, then one integer field, in that order on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Flat {
    strings: [Option<(&'static str, String)>; 3],
    int: (&'static str, i64),
}

impl Flat {
    /// `strings` (the first three that are given), then `int`.
    pub fn new(strings: impl IntoIterator<Item = (&'static str, String)>, int: (&'static str, i64)) -> Self {
        let mut slots: [Option<(&'static str, String)>; 3] = Default::default();
        for (slot, field) in slots.iter_mut().zip(strings) {
            *slot = Some(field);
        }
        Self { strings: slots, int }
    }

    /// The string fields, in wire order.
    pub(super) fn fields(&self) -> impl Iterator<Item = &(&'static str, String)> {
        self.strings.iter().flatten()
    }

    /// The integer field, written last.
    pub(super) fn int(&self) -> (&'static str, i64) {
        self.int
    }
}

impl Data {
    /// The same data as a JSON value.
    pub fn to_value(&self) -> Value {
        match self {
            Self::Json(v) => v.clone(),
            Self::Flat(f) => {
                let mut map: serde_json::Map<String, Value> =
                    f.fields().map(|(k, v)| ((*k).to_owned(), Value::String(v.clone()))).collect();
                map.insert(f.int.0.to_owned(), Value::from(f.int.1));
                Value::Object(map)
            }
        }
    }
}

impl From<Value> for Data {
    fn from(v: Value) -> Self {
        Self::Json(v)
    }
}

impl From<Flat> for Data {
    fn from(f: Flat) -> Self {
        Self::Flat(f)
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Json(v) => v.serialize(s),
            Self::Flat(f) => {
                let mut map = s.serialize_map(Some(f.fields().count() + 1))?;
                for (k, v) in f.fields() {
                    map.serialize_entry(k, v)?;
                }
                map.serialize_entry(f.int.0, &f.int.1)?;
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written from its fields, a flat object is the bytes its JSON value serializes to, escapes included.
    #[test]
    fn a_flat_object_is_written_as_its_json_value() {
        let cases = [
            Flat::new(
                [("appid", "wx1".to_owned()), ("access_token", "t0k\"en\\\n中".to_owned())],
                ("exp", 7),
            ),
            Flat::new(
                [("corpid", "ww".into()), ("agentid", "100".into()), ("ticket", String::new())],
                ("exp", -1),
            ),
            Flat::new([], ("n", i64::MAX)),
        ];
        for flat in cases {
            let data = Data::from(flat);
            let ours = serde_json::to_string(&data).unwrap();
            assert_eq!(ours, serde_json::to_string(&data.to_value()).unwrap());
            assert_eq!(serde_json::from_str::<Value>(&ours).unwrap(), data.to_value());
        }
        let v = serde_json::json!({"a": [1, {"b": null}]});
        assert_eq!(serde_json::to_string(&Data::from(v.clone())).unwrap(), v.to_string());
    }
}
