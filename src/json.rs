//! A small JSON value and writer for perfopt's reports, the shim's
//! descriptions (method schemas, package metadata) and the tuning cache;
//! JSON from files others made is read by serde_json.

use std::fmt::{self, Write};

#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    pub fn object() -> Self {
        Json::Object(Vec::new())
    }

    /// Appends a field to an object (builder style); a no-op on other values.
    pub fn with(mut self, key: &str, value: impl Into<Json>) -> Self {
        if let Json::Object(fields) = &mut self {
            fields.push((key.to_string(), value.into()));
        }
        self
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> &[Json] {
        match self {
            Json::Array(items) => items,
            _ => &[],
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Int(i) => Some(*i as f64),
            Json::Float(x) => Some(*x),
            _ => None,
        }
    }

    /// Parses JSON text with serde_json, as most readers read it: the last
    /// of duplicate keys wins, surrogate pairs decode to their character,
    /// and `+1` or `1.` are errors (the hand-written reader this replaced
    /// differed on each, so two readers of one package could disagree).
    pub fn parse(text: &str) -> Result<Json, String> {
        serde_json::from_str::<serde_json::Value>(text)
            .map(Json::from_serde)
            .map_err(|err| err.to_string())
    }

    #[cfg(test)]
    fn as_object_len(&self) -> Option<usize> {
        match self {
            Json::Object(fields) => Some(fields.len()),
            _ => None,
        }
    }

    fn from_serde(value: serde_json::Value) -> Json {
        use serde_json::Value;
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Json::Int(i),
                None => Json::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Json::Str(s),
            Value::Array(items) => Json::Array(items.into_iter().map(Json::from_serde).collect()),
            Value::Object(fields) => Json::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| (k, Json::from_serde(v)))
                    .collect(),
            ),
        }
    }
}

impl From<bool> for Json {
    fn from(v: bool) -> Self {
        Json::Bool(v)
    }
}
impl From<i32> for Json {
    fn from(v: i32) -> Self {
        Json::Int(v.into())
    }
}
impl From<i64> for Json {
    fn from(v: i64) -> Self {
        Json::Int(v)
    }
}
impl From<u32> for Json {
    fn from(v: u32) -> Self {
        Json::Int(v.into())
    }
}
impl From<u64> for Json {
    fn from(v: u64) -> Self {
        Json::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<usize> for Json {
    fn from(v: usize) -> Self {
        Json::from(v as u64)
    }
}
impl From<f64> for Json {
    fn from(v: f64) -> Self {
        Json::Float(v)
    }
}
impl From<&str> for Json {
    fn from(v: &str) -> Self {
        Json::Str(v.to_string())
    }
}
impl From<String> for Json {
    fn from(v: String) -> Self {
        Json::Str(v)
    }
}
impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(v: Option<T>) -> Self {
        v.map_or(Json::Null, Into::into)
    }
}
impl<T: Into<Json>> From<Vec<T>> for Json {
    fn from(v: Vec<T>) -> Self {
        Json::Array(v.into_iter().map(Into::into).collect())
    }
}

fn write_string(out: &mut impl Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Int(i) => write!(f, "{i}"),
            // JSON has no NaN or infinity.
            Json::Float(x) if !x.is_finite() => f.write_str("null"),
            Json::Float(x) => write!(f, "{x}"),
            Json::Str(s) => write_string(f, s),
            Json::Array(items) => {
                f.write_char('[')?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_char(']')
            }
            Json::Object(fields) => {
                f.write_char('{')?;
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write_string(f, key)?;
                    write!(f, ":{value}")?;
                }
                f.write_char('}')
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes() {
        let value = Json::object()
            .with("name", "a \"quoted\"\nline\u{1} é")
            .with("n", -3)
            .with("x", 0.5)
            .with(
                "list",
                vec![Json::Bool(true), Json::Null, Json::Array(vec![])],
            )
            .with("empty", Json::object());
        // Fields come back by name (serde_json's map orders them by key).
        let read = Json::parse(&value.to_string()).unwrap();
        let Json::Object(fields) = &value else {
            unreachable!()
        };
        assert_eq!(read.as_object_len(), Some(fields.len()));
        for (key, field) in fields {
            assert_eq!(read.get(key), Some(field), "{key}");
        }
        assert!(Json::parse("{\"a\": }").is_err());
        assert!(Json::parse("[1, 2").is_err());
        assert!(Json::parse(&"[".repeat(100)).is_err());
        assert_eq!(Json::parse(" 1e3 ").unwrap(), Json::Float(1000.0));
    }

    #[test]
    fn reads_as_other_readers_do() {
        // Before: the first of duplicate keys won (most readers take the
        // last), a surrogate pair became two U+FFFD, and `+1`, `1.` parsed.
        let twice =
            Json::parse(r#"{"AOTI_DEVICE_KEY": "cuda", "AOTI_DEVICE_KEY": "cpu"}"#).unwrap();
        assert_eq!(
            twice.get("AOTI_DEVICE_KEY").and_then(Json::as_str),
            Some("cpu")
        );
        assert_eq!(
            Json::parse(r#""\ud83d\ude00""#).unwrap(),
            Json::Str("\u{1F600}".to_string())
        );
        for bad in ["+1", "1.", "[1.]", "01", "\"\\ud83d\"x"] {
            assert!(Json::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn writes_nested_values_and_escapes_strings() {
        let value = Json::object()
            .with("name", "a \"quoted\"\nline\u{1}")
            .with("n", 3)
            .with("x", 0.5)
            .with("nan", f64::NAN)
            .with("none", Option::<i32>::None)
            .with("list", vec![true, false]);
        assert_eq!(
            value.to_string(),
            r#"{"name":"a \"quoted\"\nline\u0001","n":3,"x":0.5,"nan":null,"none":null,"list":[true,false]}"#
        );
    }
}
