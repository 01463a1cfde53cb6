//! The body of a dashboard form: `application/x-www-form-urlencoded`, read whole (the router
//! bounds its size) and kept as ordered pairs.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};

use super::Dash;
use super::error::{DashError, DashResult};

/// An `application/x-www-form-urlencoded` body as ordered pairs (repeated names kept: the
/// task list posts one `id` per selected task).
pub struct Form(Vec<(String, String)>);

impl Form {
    pub(super) async fn read(req: Request, dash: &Dash) -> DashResult<Self> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ct.starts_with("application/x-www-form-urlencoded") {
            return Err(DashError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the form as application/x-www-form-urlencoded",
            ));
        }
        let bytes = Bytes::from_request(req, dash)
            .await
            .map_err(|_| DashError::new(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large"))?;
        Ok(Self::parse(&bytes))
    }

    pub fn parse(body: &[u8]) -> Self {
        let pairs = body
            .split(|b| *b == b'&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = match p.iter().position(|b| *b == b'=') {
                    Some(i) => (&p[..i], &p[i + 1..]),
                    None => (p, &b""[..]),
                };
                (decode(k), decode(v))
            })
            .collect();
        Self(pairs)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Percent-decoding with `+` as space; invalid escapes are kept as written.
fn decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => {
                let hex = std::str::from_utf8(&s[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_percent_plus_and_repeats() {
        let f = Form::parse(b"a=1&id=x&id=y%2Fz&msg=hello+world%21&bad=%zz&end=%4");
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.all("id").collect::<Vec<_>>(), ["x", "y/z"]);
        assert_eq!(f.get("msg"), Some("hello world!"));
        assert_eq!(f.get("bad"), Some("%zz"));
        assert_eq!(f.get("end"), Some("%4"));
    }
}
