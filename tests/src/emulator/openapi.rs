//! `/openapi/v2` as a minimal protobuf `openapi_v2.Document` (kubectl's validator and
//! patch-type lookup only need it to parse; unknown kinds skip client-side validation and
//! apply falls back to its compiled-in strategic-merge schemas). `/openapi/v3` is a 404,
//! as on servers without v3, which makes kubectl use the v2 path.

use prost::Message;

/// Content-Type kubectl expects for the protobuf document.
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `openapi_v2.Info` (only the fields we set).
#[derive(Clone, PartialEq, Message)]
pub struct Info {
    /// Field 1.
    #[prost(string, tag = "1")]
    pub title: String,
    /// Field 2.
    #[prost(string, tag = "2")]
    pub version: String,
}

/// `openapi_v2.Document` (only the fields we set).
#[derive(Clone, PartialEq, Message)]
pub struct Document {
    /// Field 1: `"2.0"`.
    #[prost(string, tag = "1")]
    pub swagger: String,
    /// Field 2.
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
}

fn document() -> Document {
    Document {
        swagger: "2.0".into(),
        info: Some(Info {
            title: "Kubernetes".into(),
            version: "v1.32.0".into(),
        }),
    }
}

/// The protobuf bytes.
pub fn v2_protobuf() -> Vec<u8> {
    document().encode_to_vec()
}

/// The same document as JSON, for clients that ask for JSON.
pub fn v2_json() -> serde_json::Value {
    serde_json::json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": {}, "definitions": {}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_round_trips() -> anyhow::Result<()> {
        let doc = Document::decode(v2_protobuf().as_slice())?;
        assert_eq!(doc.swagger, "2.0");
        Ok(())
    }
}
