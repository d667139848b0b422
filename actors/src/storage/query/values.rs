//! Values across the API's edge: JSON parameters into SQLite values, SQLite values into the
//! JSON answer, and the bytes each takes in it (what the byte budget counts).

use base64::prelude::{Engine as _, BASE64_STANDARD};
use rusqlite::types::{Value, ValueRef};
use serde_json::Value as Json;

/// The key of the tagged object that carries a blob.
pub(crate) const BLOB_TAG: &str = "$blob";

/// The largest integer JavaScript (the bot, the dashboard) holds exactly: 2^53 - 1.
pub(crate) const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// Whether a JSON number survives a round trip through JavaScript and SQLite unchanged
/// (larger ones, ids above all, must be sent as strings).
pub fn exact_number(n: &serde_json::Number) -> bool {
    n.as_f64().is_some_and(|f| f.abs() <= MAX_SAFE_INTEGER)
}

/// The statement's parameters, or the refusal naming the first that has no SQLite value.
pub(super) fn to_sql_values(params: &[Json]) -> Result<Vec<Value>, super::QueryError> {
    params
        .iter()
        .enumerate()
        .map(|(i, p)| to_sql_value(p).ok_or_else(|| {
            super::QueryError::Refused(format!(
                "parameter {} is an array, an object or a number beyond 2^53 (which JavaScript cannot hold exactly); send null, a boolean, a number or a string",
                i + 1
            ))
        }))
        .collect()
}

fn to_sql_value(param: &Json) -> Option<Value> {
    Some(match param {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Integer(i64::from(*b)),
        Json::Number(n) if !exact_number(n) => return None,
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64()?),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(_) | Json::Object(_) => return None,
    })
}

/// The bytes `value` takes in the JSON answer (text counted without escapes).
pub(super) fn encoded_len(value: ValueRef<'_>) -> usize {
    match value {
        ValueRef::Null => 4,
        ValueRef::Integer(_) | ValueRef::Real(_) => 24,
        ValueRef::Text(t) => t.len() + 2,
        ValueRef::Blob(b) => b.len().div_ceil(3) * 4 + BLOB_TAG.len() + 7,
    }
}

pub(super) fn to_json(value: ValueRef<'_>) -> Json {
    match value {
        ValueRef::Null => Json::Null,
        ValueRef::Integer(i) => Json::from(i),
        // A non-finite real (SQLite's 9e999) has no JSON number: null, as JSON.stringify does.
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        ValueRef::Text(t) => Json::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => {
            let mut tagged = serde_json::Map::with_capacity(1);
            tagged.insert(BLOB_TAG.into(), Json::String(BASE64_STANDARD.encode(b)));
            Json::Object(tagged)
        }
    }
}
