//! Decodes the Kubernetes protobuf request bodies kubectl's typed clients send
//! (`kubectl create namespace|secret|configmap|deployment|role|rolebinding|...`) into
//! JSON: the `k8s\0` envelope holding a `runtime.Unknown`, then the typed message, read
//! with a small field table per kind. Fields not in the table are skipped.

mod schema;

use base64::Engine;
use schema::T::{Bool, Int, IntOrString, MapBytes, MapQuantity, MapStr, Msg, Str, Time};
use schema::{F, T, schema};
use serde_json::{Map, Value, json};

/// Errors decoding a protobuf body.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// Not `k8s\0` + `runtime.Unknown`.
    #[error("missing the k8s protobuf envelope")]
    Envelope,
    /// Bad wire format.
    #[error("truncated or invalid protobuf data")]
    Wire,
    /// A kind we have no field table for.
    #[error("protobuf bodies of kind {0:?} are not supported by this emulator")]
    Kind(String),
}

type Result<T> = std::result::Result<T, ProtobufError>;

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or(ProtobufError::Wire)?;
            self.buf = rest;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(ProtobufError::Wire)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() {
            return Err(ProtobufError::Wire);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// Next `(field number, value)`; `Err` on bad data, `None` at the end.
    fn field(&mut self) -> Result<Option<(u32, Wire<'a>)>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let num = u32::try_from(key >> 3).map_err(|_| ProtobufError::Wire)?;
        let value = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| ProtobufError::Wire)?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed
            }
            _ => return Err(ProtobufError::Wire),
        };
        Ok(Some((num, value)))
    }
}

enum Wire<'a> {
    Varint(u64),
    Fixed,
    Bytes(&'a [u8]),
}

fn fields(buf: &[u8]) -> Result<Vec<(u32, Wire<'_>)>> {
    let mut reader = Reader { buf };
    let mut out = Vec::new();
    while let Some(f) = reader.field()? {
        out.push(f);
    }
    Ok(out)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn map_entry(b: &[u8], value: T) -> Result<(String, Value)> {
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    for (num, w) in fields(b)? {
        match (num, w) {
            (1, Wire::Bytes(b)) => k = text(b),
            (2, Wire::Bytes(b)) => v = scalar(value, b)?,
            _ => {}
        }
    }
    Ok((k, v))
}

fn scalar(t: T, b: &[u8]) -> Result<Value> {
    Ok(match t {
        MapBytes => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        MapQuantity => {
            let mut s = String::new();
            for (num, w) in fields(b)? {
                if let (1, Wire::Bytes(b)) = (num, w) {
                    s = text(b);
                }
            }
            json!(s)
        }
        _ => json!(text(b)),
    })
}

fn message(name: &str, buf: &[u8]) -> Result<Value> {
    let table = schema(name).ok_or_else(|| ProtobufError::Kind(name.to_string()))?;
    let mut out = Map::new();
    for (num, w) in fields(buf)? {
        let Some(F(_, key, ty, repeated)) = table.iter().find(|f| f.0 == num).copied() else {
            continue;
        };
        let value = match (ty, w) {
            (Str, Wire::Bytes(b)) => {
                let s = text(b);
                if s.is_empty() && !repeated {
                    continue;
                }
                json!(s)
            }
            (Int, Wire::Varint(v)) => {
                // gogo protobuf writes non-pointer ints even when zero; JSON omits them.
                if v == 0 && !matches!(key, "replicas" | "terminationGracePeriodSeconds") {
                    continue;
                }
                json!(v as i64 as i32)
            }
            (Bool, Wire::Varint(v)) => {
                if v == 0 {
                    continue;
                }
                json!(true)
            }
            (Msg(inner), Wire::Bytes(b)) => message(inner, b)?,
            (MapStr | MapBytes | MapQuantity, Wire::Bytes(b)) => {
                let (k, v) = map_entry(b, ty)?;
                let slot = out.entry(key).or_insert_with(|| json!({}));
                if let Some(m) = slot.as_object_mut() {
                    m.insert(k, v);
                }
                continue;
            }
            (Time, Wire::Bytes(b)) => {
                let mut secs = 0i64;
                for (n, w) in fields(b)? {
                    if let (1, Wire::Varint(v)) = (n, w) {
                        secs = v as i64;
                    }
                }
                if secs == 0 {
                    continue;
                }
                match chrono::DateTime::from_timestamp(secs, 0) {
                    Some(t) => json!(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    None => continue,
                }
            }
            (IntOrString, Wire::Bytes(b)) => {
                let (mut kind, mut int, mut s) = (0u64, 0i64, String::new());
                for (n, w) in fields(b)? {
                    match (n, w) {
                        (1, Wire::Varint(v)) => kind = v,
                        (2, Wire::Varint(v)) => int = v as i64,
                        (3, Wire::Bytes(b)) => s = text(b),
                        _ => {}
                    }
                }
                if kind == 1 {
                    json!(s)
                } else {
                    json!(int as i32)
                }
            }
            _ => continue,
        };
        if repeated {
            let slot = out.entry(key).or_insert_with(|| json!([]));
            if let Some(a) = slot.as_array_mut() {
                a.push(value);
            }
        } else {
            out.insert(key.to_string(), value);
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a `application/vnd.kubernetes.protobuf` body into the JSON object it encodes.
pub fn decode(body: &[u8]) -> Result<Value> {
    let unknown = body.strip_prefix(b"k8s\0").ok_or(ProtobufError::Envelope)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (num, w) in fields(unknown)? {
        match (num, w) {
            (1, Wire::Bytes(tm)) => {
                for (n, w) in fields(tm)? {
                    match (n, w) {
                        (1, Wire::Bytes(b)) => api_version = text(b),
                        (2, Wire::Bytes(b)) => kind = text(b),
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let mut obj = message(&kind, raw)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((num << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_namespace() -> anyhow::Result<()> {
        let meta = [
            field(1, b"team1"),
            field(11, &[field(1, b"a"), field(2, b"b")].concat()),
        ]
        .concat();
        let ns = field(1, &meta);
        let type_meta = [field(1, b"v1"), field(2, b"Namespace")].concat();
        let unknown = [field(1, &type_meta), field(2, &ns)].concat();
        let body = [b"k8s\0".as_slice(), &unknown].concat();
        let obj = decode(&body)?;
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team1", "labels": {"a": "b"}}})
        );
        Ok(())
    }
}
