//! A vector's JSON side: decoded fields written as JSON values, compared with the expected ones
//! (`same`), and the expected tensors read back and placed in an area for re-encoding.

use crate::codec::{self, CudaIpc, TensorRef};
use crate::json::Value;
use crate::tensor::DataType;

/// A tensor as the JSON gives it: name, datatype, shape, bytes (HOST) or handle (CUDA_IPC).
pub(super) type Spec = (String, DataType, Vec<u64>, Vec<u8>, Option<CudaIpc>);

pub(super) fn num(n: impl ToString) -> Value {
    Value::Number(n.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 {
        return Err(format!("odd hex {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

pub(super) fn tensors_json(refs: &[TensorRef], area: &[u8]) -> Value {
    Value::Array(
        refs.iter()
            .map(|r| {
                let shape = Value::Array(r.shape.iter().map(num).collect());
                if let Some(c) = &r.cuda {
                    return Value::Object(vec![
                        ("data_size".into(), num(r.data_size)),
                        ("datatype".into(), Value::String(r.datatype.name().into())),
                        ("device".into(), num(c.device)),
                        ("ipc_handle_hex".into(), Value::String(hex(&c.ipc_handle))),
                        ("ipc_offset".into(), num(c.ipc_offset)),
                        ("location".into(), Value::String("CUDA_IPC".into())),
                        ("name".into(), Value::String(r.name.clone())),
                        ("shape".into(), shape),
                    ]);
                }
                Value::Object(vec![
                    ("data_hex".into(), Value::String(hex(r.bytes(area)))),
                    ("data_offset".into(), num(r.data_offset)),
                    ("data_size".into(), num(r.data_size)),
                    ("datatype".into(), Value::String(r.datatype.name().into())),
                    ("name".into(), Value::String(r.name.clone())),
                    ("shape".into(), shape),
                ])
            })
            .collect(),
    )
}

/// Whether a JSON number is written as an integer (no fraction, no exponent).
fn integral(n: &str) -> bool {
    !n.contains(['.', 'e', 'E'])
}

/// Semantic equality: objects ignore member order; integers compare exactly (as f64 values,
/// request ids, shapes and offsets past 2^53 rounded to the same double), other numbers as the
/// same double, bit for bit (-0.0 is not 0.0), and an integer is no fraction (1 is not 1.0).
pub(super) fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (integral(x), integral(y)) {
            (true, true) => x == y,
            (false, false) => matches!(
                (x.parse::<f64>(), y.parse::<f64>()),
                (Ok(p), Ok(q)) if p.to_bits() == q.to_bits()
            ),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

pub(super) fn specs_of(expect: &Value, key: &str) -> Result<Vec<Spec>, String> {
    let mut out = Vec::new();
    for t in expect
        .get(key)
        .and_then(Value::as_array)
        .ok_or(format!("no {key}"))?
    {
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .ok_or("tensor without name")?;
        let dt = t
            .get("datatype")
            .and_then(Value::as_str)
            .and_then(DataType::from_name)
            .ok_or("bad datatype")?;
        let shape = t
            .get("shape")
            .and_then(Value::as_array)
            .ok_or("no shape")?
            .iter()
            .map(|d| d.as_u64().ok_or("bad dim"))
            .collect::<Result<Vec<_>, _>>()?;
        if t.get("location").and_then(Value::as_str) == Some("CUDA_IPC") {
            let handle = unhex(str_of(t, "ipc_handle_hex")?)?;
            let cuda = CudaIpc {
                device: t
                    .get("device")
                    .and_then(|v| match v {
                        Value::Number(n) => n.parse().ok(),
                        _ => None,
                    })
                    .ok_or("bad device")?,
                ipc_handle: handle
                    .try_into()
                    .map_err(|_| "ipc_handle is not 64 bytes")?,
                ipc_offset: u64_of(t, "ipc_offset")?,
            };
            out.push((name.to_string(), dt, shape, Vec::new(), Some(cuda)));
            continue;
        }
        let data = unhex(
            t.get("data_hex")
                .and_then(Value::as_str)
                .ok_or("no data_hex")?,
        )?;
        out.push((name.to_string(), dt, shape, data, None));
    }
    Ok(out)
}

/// Place the HOST tensors as section 5 says (CUDA_IPC ones take no room) and copy their bytes.
pub(super) fn place(
    specs: &[Spec],
    payload: usize,
    area: &mut [u8],
) -> Result<Vec<TensorRef>, String> {
    let views: Vec<(&str, DataType, &[u64])> = specs
        .iter()
        .filter(|s| s.4.is_none())
        .map(|(n, d, s, _, _)| (n.as_str(), *d, s.as_slice()))
        .collect();
    let (host, _) = codec::layout(&views, payload).map_err(|e| e.to_string())?;
    let mut host = host.into_iter();
    let mut refs = Vec::with_capacity(specs.len());
    for (name, dt, shape, data, cuda) in specs {
        let r = match cuda {
            Some(c) => TensorRef {
                name: name.clone(),
                datatype: *dt,
                shape: shape.clone(),
                data_offset: 0,
                data_size: crate::tensor::byte_size(*dt, shape).ok_or("tensor too large")?,
                cuda: Some(c.clone()),
            },
            None => {
                let r = host.next().ok_or("layout lost a tensor")?;
                area.get_mut(r.data_offset..r.data_offset + data.len())
                    .ok_or("tensor outside the area")?
                    .copy_from_slice(data);
                r
            }
        };
        refs.push(r);
    }
    Ok(refs)
}

pub(super) fn str_of<'a>(e: &'a Value, k: &str) -> Result<&'a str, String> {
    e.get(k).and_then(Value::as_str).ok_or(format!("no {k}"))
}
pub(super) fn u64_of(e: &Value, k: &str) -> Result<u64, String> {
    e.get(k).and_then(Value::as_u64).ok_or(format!("no {k}"))
}
