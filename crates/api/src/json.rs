//! A JSON body extractor whose rejections are [`Error`]s with a message that
//! names the problem (the field and what was wrong), rendered in the
//! service's style like every other error.

use axum::extract::{FromRequest, Request};
use axum::http::header;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::Error;

/// Extracts and deserializes a JSON request body.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ct_ok = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let v = v.to_ascii_lowercase();
                v.starts_with("application/json") || v.contains("+json")
            })
            // Clients occasionally omit the header; Keystone accepts that.
            .unwrap_or(true);
        if !ct_ok {
            return Err(Error::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "The request body must be JSON (Content-Type: application/json).",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            let status = rej.status();
            if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Error::new(status, "Request is too large.")
            } else {
                Error::bad_request("The request body could not be read.")
            }
        })?;
        parse(&bytes).map(Json)
    }
}

/// Parses a JSON document into `T`, turning serde's message into one for the
/// user: the path of the offending field and what was expected.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.is_empty() {
        return Err(Error::bad_request(
            "The request body is empty; a JSON object is required.",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return Error::bad_request(format!("Malformed JSON in the request body: {inner}"));
        }
        // serde_json appends " at line N column M", noise for a type error.
        let msg = inner.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        if path.is_empty() || path == "." {
            Error::bad_request(format!("Invalid input: {msg}"))
        } else {
            Error::bad_request(format!("Invalid input for field '{path}': {msg}"))
        }
    })?;
    de.end()
        .map_err(|e| Error::bad_request(format!("Malformed JSON in the request body: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        name: String,
        enabled: Option<bool>,
    }

    #[test]
    fn messages_name_the_problem() {
        let e = parse::<P>(b"{").unwrap_err();
        assert!(e.message.contains("Malformed JSON"), "{}", e.message);
        let e = parse::<P>(br#"{"enabled": true}"#).unwrap_err();
        assert!(e.message.contains("name"), "{}", e.message);
        let e = parse::<P>(br#"{"name": "a", "bogus": 1}"#).unwrap_err();
        assert!(e.message.contains("bogus"), "{}", e.message);
        let e = parse::<P>(br#"{"name": "a", "enabled": "yes"}"#).unwrap_err();
        assert!(e.message.contains("boolean"), "{}", e.message);
        assert_eq!(e.status, 400);
        let e = parse::<P>(b"").unwrap_err();
        assert!(e.message.contains("empty"));
    }
}
