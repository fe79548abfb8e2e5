//! Request and response parameters: a flat JSON object of strings, numbers and booleans, encoded
//! compact with its keys sorted (docs/protocol/shm.md sections 5 and 14; check 10 of section 8).
//! Both sides read it as I-JSON (RFC 7493): no name twice, strings of Unicode scalar values (the
//! JSON reader refuses an escaped lone surrogate), an integer within ±(2^53 − 1) and any other
//! number finite as a double.

use std::collections::HashSet;

use super::invalid;
use crate::error::Result;
use crate::json::{self, Value};

/// The largest parameter integer (a number without fraction or exponent): 2^53 − 1, the last
/// of the integers every double holds exactly; its negation is the smallest.
pub const MAX_PARAM_INT: i64 = (1 << 53) - 1;

/// Why the JSON number `text` (valid JSON grammar) is not a parameter (section 8 step 10), if not.
fn number_problem(text: &str) -> Option<String> {
    if !text.contains(['.', 'e', 'E']) {
        let digits = text.trim_start_matches('-');
        let fits = digits.len() <= 16 && digits.parse::<i64>().is_ok_and(|v| v <= MAX_PARAM_INT);
        return (!fits).then(|| {
            let shown: String = text.chars().take(40).collect();
            format!("is the integer {shown}, outside ±(2^53 − 1)")
        });
    }
    // one too small for a double rounds to 0 and passes, as any other rounding
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => None,
        _ => {
            let shown: String = text.chars().take(40).collect();
            Some(format!("is {shown}, beyond the range of a double"))
        }
    }
}

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
            Param::Int(i) if (-MAX_PARAM_INT..=MAX_PARAM_INT).contains(i) => {
                Value::Number(i.to_string())
            }
            Param::Int(i) => {
                return Err(invalid(
                    format!("parameter value {i} is outside ±(2^53 − 1) (send it as a string)"),
                    0,
                ))
            }
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

/// Parameters as the spec encodes them: compact JSON, keys sorted; empty for none. A name
/// given twice, an integer beyond ±(2^53 − 1) or a float that is not finite is refused
/// (`InvalidInput`), as every decoder would refuse it.
pub fn encode_params(params: &[(String, Param)]) -> Result<Vec<u8>> {
    let mut seen = HashSet::new();
    let members = params
        .iter()
        .map(|(k, v)| {
            if !seen.insert(k.as_str()) {
                return Err(invalid(format!("parameter {k:?} is given twice"), 0));
            }
            let value = v
                .to_value()
                .map_err(|e| invalid(format!("parameter {k:?}: {}", e.message), 0))?;
            Ok((k.clone(), value))
        })
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
    let Value::Object(members) = json::parse(text)
        .map_err(|e| invalid(format!("params are not valid UTF-8 JSON: {e}"), rid))?
    else {
        return Err(bad());
    };
    let mut seen = HashSet::with_capacity(members.len());
    for (k, v) in &members {
        if !seen.insert(k.as_str()) {
            return Err(invalid(format!("params name {k:?} twice"), rid));
        }
        match v {
            Value::String(_) | Value::Bool(_) => {}
            Value::Number(n) => {
                if let Some(why) = number_problem(n) {
                    return Err(invalid(format!("params: {k:?} {why}"), rid));
                }
            }
            _ => return Err(bad()),
        }
    }
    Ok(members)
}
