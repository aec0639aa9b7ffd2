//! Typed access to `interface.para`: required and optional fields, lengths, and the lenient `force` flag.

use super::WaferError;
use crate::ids::IdError;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::str::FromStr;

/// Default upper bound on a para string field, in bytes. Individual fields may allow more or less.
pub const MAX_FIELD_LEN: usize = 256;

/// `interface.para` as read: its fields in the order they came, names borrowed from the body where they had no
/// escapes. A name given twice means its last value, as in a JSON map. Looked up by comparing names: a request has a
/// handful of fields, for which hashing each name (a JSON map's way) cost more than the whole lookup.
#[derive(Debug, Clone, Default)]
pub struct ParaMap<'a>(Vec<(Cow<'a, str>, Value)>);

impl<'a> ParaMap<'a> {
    /// The value of field `name` (its last, if given twice).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// The fields as a JSON map (a name given twice: its last value, at its first place).
    pub fn to_map(&self) -> Map<String, Value> {
        let mut m = Map::new();
        for (k, v) in &self.0 {
            m.insert(k.clone().into_owned(), v.clone());
        }
        m
    }
}

impl From<Map<String, Value>> for ParaMap<'static> {
    fn from(m: Map<String, Value>) -> Self {
        Self(m.into_iter().map(|(k, v)| (Cow::Owned(k), v)).collect())
    }
}

impl PartialEq for ParaMap<'_> {
    /// The same fields with the same values, whatever their order or repetition.
    fn eq(&self, other: &Self) -> bool {
        self.to_map() == other.to_map()
    }
}

impl<'de> serde::Deserialize<'de> for ParaMap<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = ParaMap<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ParaMap<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(4).min(16));
                while let Some(super::Text(name)) = map.next_key()? {
                    fields.push((name, map.next_value::<Value>()?));
                }
                Ok(ParaMap(fields))
            }
        }
        d.deserialize_map(Fields)
    }
}

/// A borrowed view of `para` with field accessors that produce PARA_ERR naming the field.
#[derive(Debug, Clone, Copy)]
pub struct Para<'a>(pub &'a ParaMap<'a>);

impl<'a> Para<'a> {
    /// A required, non-empty string of at most `max` bytes.
    pub fn str_max(&self, field: &str, max: usize) -> Result<&'a str, WaferError> {
        match self.opt_str_max(field, max)? {
            Some(s) => Ok(s),
            None => Err(WaferError::para(field, "is missing or empty")),
        }
    }

    /// An optional string: absent, `null` and `""` all mean "not given".
    pub fn opt_str_max(&self, field: &str, max: usize) -> Result<Option<&'a str>, WaferError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) if s.len() > max => {
                Err(WaferError::para(field, &format!("is longer than {max} bytes")))
            }
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(WaferError::para(field, "must be a string")),
        }
    }

    /// A required token: non-empty printable ASCII without spaces, at most `max` bytes. Appids, login codes,
    /// session ids and skeys are all of this form; anything else is refused before it reaches storage or WeChat.
    pub fn token(&self, field: &str, max: usize) -> Result<&'a str, WaferError> {
        let s = self.str_max(field, max)?;
        check_token(field, s)
    }

    /// An optional token (see [`Para::token`]).
    pub fn opt_token(&self, field: &str, max: usize) -> Result<Option<&'a str>, WaferError> {
        self.opt_str_max(field, max)?.map(|s| check_token(field, s)).transpose()
    }

    /// A required identifier given either as a token string or as a JSON integer (WeCom agent ids are numbers).
    pub fn ident(&self, field: &str, max: usize) -> Result<String, WaferError> {
        match self.0.get(field) {
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            _ => self.token(field, max).map(str::to_owned),
        }
    }

    /// A required identifier of its kind ([`crate::ids`]: an appid, a corpid, an agentid, a Tencent Cloud APPID),
    /// given as a string or (agentids, APPIDs) a JSON integer — parsed here once, so that keys built from it (the
    /// credential cache's `wc:token:{corpid}:{agentid}`, sealing labels) cannot collide.
    pub fn id<T: FromStr<Err = IdError>>(&self, field: &str) -> Result<T, WaferError> {
        // What `ident` reads, parsed from the text where it is (a string) rather than from a copy of it.
        let parsed = match self.0.get(field) {
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string().parse(),
            _ => self.token(field, 64)?.parse(),
        };
        parsed.map_err(|e: IdError| WaferError::para(field, &format!("must be {}", e.rule())))
    }

    /// An optional identifier of its kind (absent, `null` and `""` mean "not given").
    pub fn opt_id<T: FromStr<Err = IdError>>(&self, field: &str) -> Result<Option<T>, WaferError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(_) => self.id(field).map(Some),
        }
    }

    /// The `force` flag: JSON booleans and the strings "true"/"false"/"1"/"0" (and the integers 1/0).
    /// Absent or null means false. Anything else is a PARA_ERR rather than a guess.
    pub fn flag(&self, field: &str) -> Result<bool, WaferError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::Number(n)) if n.as_i64() == Some(1) => Ok(true),
            Some(Value::Number(n)) if n.as_i64() == Some(0) => Ok(false),
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" | "" => Ok(false),
                _ => Err(WaferError::para(field, "must be true or false")),
            },
            Some(_) => Err(WaferError::para(field, "must be true or false")),
        }
    }

    /// An optional non-negative integer given as a JSON number or a decimal string.
    pub fn opt_u64(&self, field: &str) -> Result<Option<u64>, WaferError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => {
                n.as_u64().map(Some).ok_or_else(|| WaferError::para(field, "must be a non-negative integer"))
            }
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) if s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().map(Some).map_err(|_| WaferError::para(field, "must be a non-negative integer"))
            }
            Some(_) => Err(WaferError::para(field, "must be a non-negative integer")),
        }
    }
}

fn check_token<'a>(field: &str, s: &'a str) -> Result<&'a str, WaferError> {
    if s.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(s)
    } else {
        Err(WaferError::para(field, "must be printable ASCII without spaces"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn para(v: Value) -> ParaMap<'static> {
        v.as_object().unwrap().clone().into()
    }

    /// Read from a body, a name given twice means its last value, as in the JSON map the fields used to be read
    /// into; names without escapes are borrowed from the body.
    #[test]
    fn a_name_given_twice_means_its_last_value() {
        let body = r#"{"appid":"wx1","n":1,"appid":"wx2","\u0061ppid2":"x"}"#;
        let fields: ParaMap = serde_json::from_str(body).unwrap();
        assert_eq!(fields.get("appid"), Some(&json!("wx2")));
        assert_eq!(fields.get("appid2"), Some(&json!("x")), "an escaped name is read as its text");
        assert!(fields.contains_key("n") && !fields.contains_key("m"));
        let map: Map<String, Value> = serde_json::from_str(body).unwrap();
        assert_eq!(fields.to_map(), map);
        assert_eq!(fields, ParaMap::from(map));
        assert!(matches!(fields.0[0].0, Cow::Borrowed("appid")));
        assert!(serde_json::from_str::<ParaMap>("[1]").is_err(), "an object only");
    }

    #[test]
    fn force_accepts_the_documented_spellings_and_not_the_seed_bug() {
        let m = para(json!({"a": true, "b": "false", "c": "1", "d": "0", "e": false, "f": "yes", "g": 1}));
        let p = Para(&m);
        assert!(p.flag("a").unwrap());
        assert!(!p.flag("b").unwrap(), "the string \"false\" is false");
        assert!(p.flag("c").unwrap());
        assert!(!p.flag("d").unwrap());
        assert!(!p.flag("e").unwrap());
        assert!(p.flag("f").is_err());
        assert!(p.flag("g").unwrap());
        assert!(!p.flag("missing").unwrap());
    }

    #[test]
    fn strings_are_checked_for_presence_type_and_length() {
        let m = para(json!({"s": "x", "empty": "", "num": 5, "long": "y".repeat(300)}));
        let p = Para(&m);
        assert_eq!(p.str_max("s", MAX_FIELD_LEN).unwrap(), "x");
        assert!(p.str_max("empty", MAX_FIELD_LEN).unwrap_err().message.contains("para.empty"));
        assert!(p.str_max("num", MAX_FIELD_LEN).unwrap_err().message.contains("must be a string"));
        assert!(p.str_max("long", MAX_FIELD_LEN).unwrap_err().message.contains("longer"));
        assert!(p.str_max("missing", MAX_FIELD_LEN).is_err());
        assert_eq!(p.ident("num", 10).unwrap(), "5");
        assert_eq!(p.token("s", 10).unwrap(), "x");
        let m = para(json!({"sp": "wx1 ", "ctl": "a\u{1}", "cjk": "小"}));
        let p = Para(&m);
        for f in ["sp", "ctl", "cjk"] {
            assert!(p.token(f, 10).unwrap_err().message.contains("printable"), "{f}");
        }
    }
}
