//! Credentials: basic auth or a bearer token.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use destination_core::Secret;
use reqwest::header::HeaderValue;
use serde::Deserialize;

/// Credentials sent with each request. `Debug` never shows the secret part.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Auth {
    /// HTTP basic auth: `{username, password}`.
    Basic(BasicAuth),
    /// A bearer token: `{token}`.
    Bearer(BearerAuth),
}

/// HTTP basic auth credentials.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name.
    pub username: String,
    /// The password (may be empty).
    #[serde(default = "empty_secret")]
    pub password: Secret,
}

fn empty_secret() -> Secret {
    Secret::new("")
}

/// A bearer token, sent as `Authorization: Bearer <token>`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerAuth {
    /// The token.
    pub token: Secret,
}

impl Auth {
    /// Basic auth with `username` and `password`.
    pub fn basic(username: impl Into<String>, password: impl Into<Secret>) -> Self {
        Self::Basic(BasicAuth {
            username: username.into(),
            password: password.into(),
        })
    }

    /// A bearer token.
    pub fn bearer(token: impl Into<Secret>) -> Self {
        Self::Bearer(BearerAuth {
            token: token.into(),
        })
    }
}

/// The `Authorization` value, marked sensitive; `None` if it is no valid header value.
pub(crate) fn auth_header(auth: &Auth) -> Option<HeaderValue> {
    let text = match auth {
        Auth::Basic(basic) => {
            let pair = format!("{}:{}", basic.username, basic.password.expose());
            format!("Basic {}", STANDARD.encode(pair))
        }
        Auth::Bearer(bearer) => format!("Bearer {}", bearer.token.expose()),
    };
    let mut value = HeaderValue::from_str(&text).ok()?;
    value.set_sensitive(true);
    Some(value)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_both_forms() {
        let basic: Auth =
            serde_json::from_value(json!({"username": "u", "password": "p"})).unwrap();
        assert_eq!(basic, Auth::basic("u", "p"));
        let no_password: Auth = serde_json::from_value(json!({"username": "u"})).unwrap();
        assert_eq!(no_password, Auth::basic("u", ""));
        let bearer: Auth = serde_json::from_value(json!({"token": "t"})).unwrap();
        assert_eq!(bearer, Auth::bearer("t"));
        assert!(serde_json::from_value::<Auth>(json!({"token": "t", "x": 1})).is_err());
        assert!(serde_json::from_value::<Auth>(json!({"password": "p"})).is_err());
    }

    #[test]
    fn builds_sensitive_headers() {
        let basic = auth_header(&Auth::basic("Aladdin", "open sesame")).unwrap();
        assert_eq!(basic, "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(basic.is_sensitive());
        assert_eq!(auth_header(&Auth::bearer("t0k")).unwrap(), "Bearer t0k");
        assert!(auth_header(&Auth::bearer("line\nbreak")).is_none());
        assert!(!format!("{:?}", Auth::bearer("t0k")).contains("t0k"));
    }
}
