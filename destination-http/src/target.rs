//! Where and how a request goes: the configured target, and per-event overrides.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use destination_core::Event;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::auth::{Auth, auth_header};
use crate::client::check_url;
use crate::config::HttpConfig;
use crate::error::{HttpError, redact_url, redact_url_str};
use crate::method::Method;

/// The event attributes that may override the request when `allow_override` is set.
pub(crate) const OVERRIDE_ATTRIBUTES: [&str; 5] = ["url", "method", "headers", "params", "auth"];

/// One request's method, URL (parameters included) and headers (credentials included).
#[derive(Clone, PartialEq)]
pub(crate) struct Target {
    pub(crate) url: Url,
    pub(crate) method: Method,
    pub(crate) headers: HeaderMap,
    /// Whether the event's attributes changed anything, so failures are the event's fault.
    pub(crate) overridden: bool,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("url", &redact_url(&self.url))
            .field("method", &self.method)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("overridden", &self.overridden)
            .finish()
    }
}

/// The configured target, plus what overrides are merged with.
pub(crate) struct Targets {
    base: Target,
    /// The configured URL before `params` were added.
    url: Url,
    params: Vec<(String, String)>,
    headers: HeaderMap,
    auth: Option<HeaderValue>,
    allow_override: bool,
    allow_link_local: bool,
    hasher: RandomState,
}

impl fmt::Debug for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Targets")
            .field("base", &self.base)
            .field("allow_override", &self.allow_override)
            .field("allow_link_local", &self.allow_link_local)
            .finish_non_exhaustive()
    }
}

impl Targets {
    /// Validates the configured URL, method, headers, parameters and credentials.
    pub(crate) fn new(config: &HttpConfig) -> Result<Self, HttpError> {
        let url = parse_url(&config.url).map_err(|e| match e {
            UrlError::Parse(source) => HttpError::InvalidUrl {
                url: redact_url_str(&config.url),
                source,
            },
            UrlError::Scheme(scheme) => HttpError::UnsupportedScheme { scheme },
        })?;
        check_url(&url, config.allow_link_local).map_err(|reason| HttpError::RefusedTarget {
            target: redact_url(&url),
            reason,
        })?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let (name, value) = header(name, value).ok_or_else(|| HttpError::InvalidHeader {
                name: name.chars().take(64).collect(),
            })?;
            headers.insert(name, value);
        }
        let auth = match &config.auth {
            Some(auth) => Some(auth_header(auth).ok_or(HttpError::InvalidSetting {
                key: "auth",
                reason: "contains characters not allowed in a header".into(),
            })?),
            None => None,
        };
        let params: Vec<(String, String)> = config.params.clone().into_iter().collect();
        let base = assemble(
            url.clone(),
            config.method,
            headers.clone(),
            &params,
            auth.clone(),
        );
        Ok(Self {
            base: Target {
                overridden: false,
                ..base
            },
            url,
            params,
            headers,
            auth,
            allow_override: config.allow_override,
            allow_link_local: config.allow_link_local,
            hasher: RandomState::new(),
        })
    }

    /// The configured target.
    pub(crate) fn base(&self) -> &Target {
        &self.base
    }

    /// Whether `event` carries an override attribute that will be honoured.
    pub(crate) fn overrides(&self, event: &Event) -> bool {
        self.allow_override
            && OVERRIDE_ATTRIBUTES
                .iter()
                .any(|key| event.attributes.contains_key(*key))
    }

    /// The target of `event`: the configured one, or its overrides merged in.
    ///
    /// Configured headers, parameters and credentials are kept only when the event's URL
    /// has the configured URL's origin, so that an event cannot send them elsewhere.
    ///
    /// # Errors
    ///
    /// A message naming the attribute that is invalid, without its value.
    pub(crate) fn for_event(&self, event: &Event) -> Result<Target, String> {
        if !self.overrides(event) {
            return Ok(self.base.clone());
        }
        let attr = |key| event.attributes.get(key).filter(|v| !v.is_null());

        let url = match attr("url") {
            Some(Value::String(text)) => parse_url(text).map_err(|e| match e {
                UrlError::Parse(e) => format!("invalid url attribute: {e}"),
                UrlError::Scheme(s) => format!("url attribute has unsupported scheme {s:?}"),
            })?,
            Some(_) => return Err("url attribute is not a string".into()),
            None => self.url.clone(),
        };
        check_url(&url, self.allow_link_local)
            .map_err(|reason| format!("refused target {}: {reason}", redact_url(&url)))?;
        let same_origin = url.origin() == self.url.origin();

        let method = match attr("method") {
            Some(Value::String(text)) => text.parse().map_err(|e| format!("{e}"))?,
            Some(_) => return Err("method attribute is not a string".into()),
            None => self.base.method,
        };
        let (mut headers, mut params, mut auth) = match same_origin {
            true => (self.headers.clone(), self.params.clone(), self.auth.clone()),
            false => (HeaderMap::new(), Vec::new(), None),
        };
        for (name, value) in string_map(attr("headers"), "headers")? {
            let (name, value) =
                header(&name, &value).ok_or("headers attribute has an invalid header")?;
            headers.insert(name, value);
        }
        for (name, value) in string_map(attr("params"), "params")? {
            params.retain(|(n, _)| *n != name);
            params.push((name, value));
        }
        if let Some(value) = attr("auth") {
            let parsed: Auth = serde_json::from_value(value.clone())
                .map_err(|_| "auth attribute is neither {username, password} nor {token}")?;
            auth = Some(auth_header(&parsed).ok_or("auth attribute has invalid characters")?);
        }
        Ok(Target {
            overridden: true,
            ..assemble(url, method, headers, &params, auth)
        })
    }

    /// A partition key grouping events with the same overridden target, for batched modes.
    pub(crate) fn partition_key(&self, event: &Event) -> Option<String> {
        if !self.overrides(event) {
            return None;
        }
        let target = self.for_event(event).ok()?;
        // A keyed hash, random per destination: the key may be logged, and must not let
        // anyone test guesses of the credentials or parameters it was made from. Equal
        // keys for different targets would only cost batching: `deliver` splits them.
        let mut hash = self.hasher.build_hasher();
        target.method.hash(&mut hash);
        target.url.as_str().hash(&mut hash);
        let mut headers: Vec<(&str, &[u8])> = target
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        headers.sort();
        headers.hash(&mut hash);
        Some(format!("http-{:016x}", hash.finish()))
    }
}

enum UrlError {
    Parse(url::ParseError),
    Scheme(String),
}

fn parse_url(text: &str) -> Result<Url, UrlError> {
    let url = Url::parse(text.trim()).map_err(UrlError::Parse)?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(UrlError::Scheme(other.chars().take(16).collect())),
    }
}

fn header(name: &str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    let name = HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
    let mut value = HeaderValue::from_str(value).ok()?;
    value.set_sensitive(true);
    Some((name, value))
}

/// A JSON object of strings, numbers or booleans, as string pairs.
fn string_map(value: Option<&Value>, what: &str) -> Result<Vec<(String, String)>, String> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let Value::Object(map) = value else {
        return Err(format!("{what} attribute is not an object"));
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            Value::Number(n) => Ok((k.clone(), n.to_string())),
            Value::Bool(b) => Ok((k.clone(), b.to_string())),
            _ => Err(format!("{what} attribute values must be strings")),
        })
        .collect()
}

/// Puts parameters into the URL and credentials into the headers.
fn assemble(
    mut url: Url,
    method: Method,
    mut headers: HeaderMap,
    params: &[(String, String)],
    auth: Option<HeaderValue>,
) -> Target {
    if !params.is_empty() {
        url.query_pairs_mut().extend_pairs(params);
    }
    if let Some(auth) = auth {
        headers.insert(AUTHORIZATION, auth);
    }
    // The client turns user info into basic auth; explicit credentials win over it.
    if headers.contains_key(AUTHORIZATION) {
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    Target {
        url,
        method,
        headers,
        overridden: false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn targets(allow_override: bool) -> Targets {
        let config = HttpConfig::new("https://u:p@hooks.example.com/in?fixed=1")
            .with_header("X-Key", "config-secret")
            .with_param("k", "v")
            .with_auth(Auth::bearer("tok"))
            .with_allow_override(allow_override);
        Targets::new(&config).unwrap()
    }

    #[test]
    fn base_target_merges_params_and_auth() {
        let base = targets(false).base().clone();
        assert_eq!(
            base.url.as_str(),
            "https://hooks.example.com/in?fixed=1&k=v"
        );
        assert_eq!(base.headers[AUTHORIZATION], "Bearer tok");
        assert!(base.headers[AUTHORIZATION].is_sensitive());
        assert!(!format!("{base:?}").contains("config-secret"));
    }

    #[test]
    fn overrides_need_permission() {
        let event = Event::new(json!({})).with_attribute("method", "PUT");
        assert_eq!(
            targets(false).for_event(&event).unwrap().method,
            Method::Post
        );
        let t = targets(true).for_event(&event).unwrap();
        assert_eq!((t.method, t.overridden), (Method::Put, true));
    }

    #[test]
    fn configured_credentials_stay_with_their_origin() {
        let same = Event::new(json!({}))
            .with_attribute("url", "https://hooks.example.com/other")
            .with_attribute("params", json!({"k": "w", "n": 2}));
        let t = targets(true).for_event(&same).unwrap();
        assert_eq!(t.url.as_str(), "https://hooks.example.com/other?k=w&n=2");
        assert_eq!(t.headers["x-key"], "config-secret");
        assert_eq!(t.headers[AUTHORIZATION], "Bearer tok");

        let elsewhere = Event::new(json!({}))
            .with_attribute("url", "https://other.example.net/")
            .with_attribute("auth", json!({"username": "a", "password": "b"}))
            .with_attribute("headers", json!({"X-Mine": "1"}));
        let t = targets(true).for_event(&elsewhere).unwrap();
        assert_eq!(t.url.as_str(), "https://other.example.net/");
        assert!(t.headers.get("x-key").is_none());
        assert_eq!(t.headers[AUTHORIZATION], "Basic YTpi");
        assert_eq!(t.headers["x-mine"], "1");
    }

    #[test]
    fn invalid_overrides_name_the_attribute_only() {
        let t = targets(true);
        let cases = [
            ("url", json!("ftp://x/")),
            ("url", json!("http://169.254.169.254/")),
            ("method", json!("FETCH")),
            ("headers", json!({"X": {"nested": 1}})),
            ("headers", json!({"X": "line\nbreak"})),
            ("params", json!([1])),
            ("auth", json!({"user": "a"})),
        ];
        for (key, value) in cases {
            let event = Event::new(json!({})).with_attribute(key, value.clone());
            let err = t.for_event(&event).unwrap_err();
            assert!(err.contains(key) || err.contains("refused"), "{key}: {err}");
            assert!(!err.contains("line\nbreak"));
        }
    }

    #[test]
    fn partition_keys_group_equal_targets() {
        let t = targets(true);
        let a = Event::new(json!({})).with_attribute("url", "https://x.example/a");
        let b = Event::new(json!({"other": 1})).with_attribute("url", "https://x.example/a");
        let c = Event::new(json!({})).with_attribute("url", "https://x.example/c");
        assert_eq!(t.partition_key(&a), t.partition_key(&b));
        assert_ne!(t.partition_key(&a), t.partition_key(&c));
        assert_eq!(t.partition_key(&Event::new(json!({}))), None);
        assert_eq!(targets(false).partition_key(&a), None);
    }
}
