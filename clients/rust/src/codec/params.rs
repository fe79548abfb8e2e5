//! Request and response parameters: a flat JSON object of strings, numbers and booleans, encoded
//! compact with its keys sorted (docs/protocol/shm.md sections 5 and 14; check 10 of section 8).

use super::invalid;
use crate::error::Result;
use crate::json::{self, Value};

/// A parameter value: the protocol allows strings, numbers and booleans.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    /// A JSON string.
    Str(String),
    /// A JSON integer.
    Int(i64),
    /// A JSON number (finite).
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
}

impl Param {
    fn to_value(&self) -> Result<Value> {
        Ok(match self {
            Param::Str(s) => Value::String(s.clone()),
            Param::Int(i) => Value::Number(i.to_string()),
            Param::Bool(b) => Value::Bool(*b),
            Param::Float(x) if x.is_finite() => {
                let s = format!("{x:?}");
                Value::Number(s)
            }
            Param::Float(x) => {
                return Err(invalid(format!("parameter value {x} is not valid JSON"), 0))
            }
        })
    }
}

/// Parameters as the spec encodes them: compact JSON, keys sorted; empty for none.
pub fn encode_params(params: &[(String, Param)]) -> Result<Vec<u8>> {
    let members = params
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_value()?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(encode_params_json(members))
}

/// Parameters given as JSON values (numbers keep their text): compact, keys sorted.
pub fn encode_params_json(mut members: Vec<(String, Value)>) -> Vec<u8> {
    if members.is_empty() {
        return Vec::new();
    }
    members.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Object(members).to_json().into_bytes()
}

/// The members of a parameters object, checked: valid UTF-8 JSON, an object, flat.
pub(super) fn decode_params(raw: &[u8], rid: u64) -> Result<Vec<(String, Value)>> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let text =
        std::str::from_utf8(raw).map_err(|_| invalid("params are not valid UTF-8 JSON", rid))?;
    let bad = || {
        invalid(
            "params must be a JSON object of strings, numbers and booleans",
            rid,
        )
    };
    match json::parse(text).map_err(|_| invalid("params are not valid UTF-8 JSON", rid))? {
        Value::Object(members) => {
            if members
                .iter()
                .all(|(_, v)| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)))
            {
                Ok(members)
            } else {
                Err(bad())
            }
        }
        _ => Err(bad()),
    }
}
