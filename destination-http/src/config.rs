//! The webhook destination's configuration: what a user writes under a destination of type
//! `http`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use destination_core::{Secret, duration};
use serde::Deserialize;

use crate::auth::Auth;
use crate::error::{HttpError, redact_url_str};
use crate::method::Method;
use crate::retry::StatusPattern;

/// The per-attempt timeout used when `timeout` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests in flight at once per destination when `max_in_flight` is not set.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;

/// The header that carries the idempotency key when `idempotency_header` is not set.
pub const DEFAULT_IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// The configuration of an [`HttpDestination`](crate::HttpDestination).
///
/// Only `url` is required. The runtime owns the keys `type`, `batch`, `retry` and
/// `concurrency` of a destination's table, so none of them appears here.
///
/// `Debug` shows the URL without credentials, query or path, header and parameter names
/// without their values, and no secret.
///
/// # Examples
///
/// ```
/// use destination_http::{BodyMode, HttpConfig, Method};
///
/// # fn main() -> Result<(), serde_json::Error> {
/// let config: HttpConfig = serde_json::from_value(serde_json::json!({
///     "url": "https://hooks.example.com/events",
///     "method": "put",
///     "body": "ndjson",
///     "headers": {"X-Source": "destinations"},
///     "auth": {"token": "s3cr3t"},
///     "timeout": "5s",
/// }))?;
/// assert_eq!(config.method, Method::Put);
/// assert_eq!(config.body, BodyMode::Ndjson);
/// assert!(!format!("{config:?}").contains("s3cr3t"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HttpConfig {
    /// The endpoint, an `http://` or `https://` URL. Credentials in it are sent as basic
    /// auth. Logs and errors show only its scheme, host and port, because webhook URLs often
    /// carry a secret in their path or query.
    pub url: String,
    /// The request method, any of the nine HTTP verbs, in any case (default `POST`).
    #[serde(default)]
    pub method: Method,
    /// Headers added to every request. Values are never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query parameters added to every request's URL. Values are never logged.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Credentials: `{username, password}` for basic auth or `{token}` for a bearer token.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// How long one attempt may take, from connecting to reading the response (default
    /// 10 s). Written as `"250ms"`, `"30s"` or a number of seconds.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Whether events may change the request through their attributes `url`, `method`,
    /// `headers`, `params` and `auth` (default `false`: such attributes are ignored).
    #[serde(default)]
    pub allow_override: bool,
    /// How events become request bodies (default `single`: one request per event).
    #[serde(default)]
    pub body: BodyMode,
    /// The response statuses worth retrying, as codes (`503`) or classes (`"5xx"`); default
    /// `[408, 429, "5xx"]`. Any other non-2xx status rejects the events for good.
    #[serde(default = "default_retry_statuses")]
    pub retry_statuses: Vec<StatusPattern>,
    /// Standard Webhooks signing secrets, each `whsec_` followed by base64. Every request is
    /// signed with each of them, so a receiver can rotate its secret without downtime.
    #[serde(default)]
    pub signing_secrets: Vec<Secret>,
    /// The header that carries the idempotency key, stable across retries: the event id in
    /// `single` mode, [`Batch::key`](destination_core::Batch::key) otherwise (default
    /// `Idempotency-Key`; an empty string sends none).
    #[serde(default = "default_idempotency_header")]
    pub idempotency_header: String,
    /// Whether link-local (169.254.0.0/16, fe80::/10) and cloud metadata addresses may be
    /// contacted (default `false`). The check applies to the resolved addresses, not just
    /// to the host name.
    #[serde(default)]
    pub allow_link_local: bool,
    /// Requests this destination has in flight at once at most, over all batches
    /// (default 8).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Fixed addresses for host names, used instead of DNS (as curl's `--resolve`), for
    /// example `{"hooks.internal": ["10.0.0.7"]}`. The address checks still apply.
    #[serde(default)]
    pub resolve: BTreeMap<String, Vec<IpAddr>>,
    /// Accept any TLS certificate, even an expired or self-signed one (default `false`).
    /// Only for testing against endpoints you control.
    #[serde(default)]
    pub danger_accept_invalid_certs: bool,
    /// Stop sending for a while after repeated failures, then probe with one request
    /// (default: off).
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

fn default_retry_statuses() -> Vec<StatusPattern> {
    vec![
        StatusPattern::Code(408),
        StatusPattern::Code(429),
        StatusPattern::Class(5),
    ]
}

fn default_idempotency_header() -> String {
    DEFAULT_IDEMPOTENCY_HEADER.to_owned()
}

fn default_max_in_flight() -> usize {
    DEFAULT_MAX_IN_FLIGHT
}

impl HttpConfig {
    /// A configuration that posts each event to `url`, with every other setting at its
    /// default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            method: Method::default(),
            headers: BTreeMap::new(),
            params: BTreeMap::new(),
            auth: None,
            timeout: DEFAULT_TIMEOUT,
            allow_override: false,
            body: BodyMode::default(),
            retry_statuses: default_retry_statuses(),
            signing_secrets: Vec::new(),
            idempotency_header: default_idempotency_header(),
            allow_link_local: false,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            resolve: BTreeMap::new(),
            danger_accept_invalid_certs: false,
            circuit_breaker: None,
        }
    }

    /// Checks the settings that serde cannot: ranges and combinations.
    ///
    /// # Errors
    ///
    /// [`HttpError::InvalidSetting`] naming the first offending key.
    pub(crate) fn validate(&self) -> Result<(), HttpError> {
        let config = self;
        let invalid = |key, reason: &str| {
            Err(HttpError::InvalidSetting {
                key,
                reason: reason.to_owned(),
            })
        };
        if config.timeout.is_zero() {
            return invalid("timeout", "must be more than zero");
        }
        if config.max_in_flight == 0 {
            return invalid("max_in_flight", "must be at least 1");
        }
        if config.body != BodyMode::Single && !config.method.allows_body() {
            return invalid(
                "body",
                "json_array and ndjson need a method that carries a body",
            );
        }
        let valid_pattern = |p: &StatusPattern| match *p {
            StatusPattern::Code(code) => (300..600).contains(&code),
            StatusPattern::Class(class) => (3..=5).contains(&class),
        };
        if !config.retry_statuses.iter().all(valid_pattern) {
            return invalid(
                "retry_statuses",
                "codes go from 300 to 599, classes from 3xx to 5xx",
            );
        }
        if let Some(breaker) = &config.circuit_breaker
            && (breaker.failures == 0 || breaker.open_for.is_zero())
        {
            return invalid(
                "circuit_breaker",
                "failures and open_for must be more than zero",
            );
        }
        Ok(())
    }

    /// Sets the request method.
    pub fn with_method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Adds a header sent with every request.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Adds a query parameter sent with every request.
    pub fn with_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.insert(name.into(), value.into());
        self
    }

    /// Sets the credentials.
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Sets the per-attempt timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how events become request bodies.
    pub fn with_body(mut self, body: BodyMode) -> Self {
        self.body = body;
        self
    }

    /// Lets events override the request through their attributes.
    pub fn with_allow_override(mut self, allow: bool) -> Self {
        self.allow_override = allow;
        self
    }

    /// Adds a Standard Webhooks signing secret (`whsec_...`).
    pub fn with_signing_secret(mut self, secret: impl Into<Secret>) -> Self {
        self.signing_secrets.push(secret.into());
        self
    }

    /// Sets the retryable statuses.
    pub fn with_retry_statuses(mut self, statuses: Vec<StatusPattern>) -> Self {
        self.retry_statuses = statuses;
        self
    }

    /// Sets the idempotency header's name; an empty name sends none.
    pub fn with_idempotency_header(mut self, name: impl Into<String>) -> Self {
        self.idempotency_header = name.into();
        self
    }

    /// Sets how many requests may be in flight at once.
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max;
        self
    }

    /// Pins `host` to fixed addresses instead of resolving it.
    pub fn with_resolve(mut self, host: impl Into<String>, addrs: Vec<IpAddr>) -> Self {
        self.resolve.insert(host.into(), addrs);
        self
    }

    /// Allows or refuses link-local and cloud metadata addresses.
    pub fn with_allow_link_local(mut self, allow: bool) -> Self {
        self.allow_link_local = allow;
        self
    }

    /// Enables the circuit breaker.
    pub fn with_circuit_breaker(mut self, breaker: CircuitBreakerConfig) -> Self {
        self.circuit_breaker = Some(breaker);
        self
    }
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("url", &redact_url_str(&self.url))
            .field("method", &self.method)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("params", &self.params.keys().collect::<Vec<_>>())
            .field("auth", &self.auth)
            .field("timeout", &self.timeout)
            .field("allow_override", &self.allow_override)
            .field("body", &self.body)
            .field("retry_statuses", &self.retry_statuses)
            .field("signing_secrets", &self.signing_secrets.len())
            .field("idempotency_header", &self.idempotency_header)
            .field("allow_link_local", &self.allow_link_local)
            .field("max_in_flight", &self.max_in_flight)
            .field("resolve", &self.resolve)
            .field(
                "danger_accept_invalid_certs",
                &self.danger_accept_invalid_certs,
            )
            .field("circuit_breaker", &self.circuit_breaker)
            .finish()
    }
}

/// How events become request bodies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyMode {
    /// One request per event, its payload as a JSON body. Several events of one batch are
    /// sent concurrently, up to `max_in_flight`.
    #[default]
    Single,
    /// One request per batch, a JSON array of the payloads.
    JsonArray,
    /// One request per batch, one payload per line (`application/x-ndjson`).
    Ndjson,
}

/// When the circuit breaker opens and for how long.
///
/// After `failures` retryable failures in a row (connection errors, timeouts, retryable
/// statuses), the destination stops sending for `open_for`: deliveries fail at once as
/// rate limited, so the runtime pauses the whole destination. Then one request is let
/// through as a probe; its success closes the circuit, its failure opens it again.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Retryable failures in a row that open the circuit (default 5).
    #[serde(default = "default_breaker_failures")]
    pub failures: u32,
    /// How long the circuit stays open before a probe (default 30 s).
    #[serde(default = "default_breaker_open_for", with = "duration")]
    pub open_for: Duration,
}

fn default_breaker_failures() -> u32 {
    5
}

fn default_breaker_open_for() -> Duration {
    Duration::from_secs(30)
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failures: default_breaker_failures(),
            open_for: default_breaker_open_for(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults() {
        let config: HttpConfig = serde_json::from_value(json!({"url": "http://x/"})).unwrap();
        assert_eq!(config.method, Method::Post);
        assert_eq!(config.body, BodyMode::Single);
        assert_eq!(config.timeout, DEFAULT_TIMEOUT);
        assert_eq!(config.idempotency_header, "Idempotency-Key");
        assert!(!config.allow_override && !config.allow_link_local);
        let retry = |s| config.retry_statuses.iter().any(|p| p.matches(s));
        assert!(retry(408) && retry(429) && retry(500) && retry(599));
        assert!(!retry(404) && !retry(400) && !retry(200));
    }

    #[test]
    fn rejects_runtime_keys_and_unknown_fields() {
        for key in ["type", "batch", "retry", "concurrency", "urll"] {
            let value = json!({"url": "http://x/", key: 1});
            assert!(
                serde_json::from_value::<HttpConfig>(value).is_err(),
                "{key}"
            );
        }
    }

    #[test]
    fn parses_methods_auth_statuses_and_durations() {
        let config: HttpConfig = serde_json::from_value(json!({
            "url": "http://x/",
            "method": "pAtCh",
            "auth": {"username": "u", "password": "p"},
            "retry_statuses": [503, "4xx", "418"],
            "timeout": "250ms",
        }))
        .unwrap();
        assert_eq!(config.method, Method::Patch);
        assert_eq!(config.auth, Some(Auth::basic("u", "p")));
        assert_eq!(
            config.retry_statuses,
            [
                StatusPattern::Code(503),
                StatusPattern::Class(4),
                StatusPattern::Code(418)
            ]
        );
        assert_eq!(config.timeout, Duration::from_millis(250));
    }

    /// The runtime hands over a TOML table; every key type must come through it.
    #[test]
    fn parses_a_toml_table() {
        let config: HttpConfig = toml::from_str(
            r#"
            url = "https://hooks.example.com/in"
            method = "PUT"
            body = "json_array"
            timeout = "2s"
            retry_statuses = [409, "5xx"]
            signing_secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
            idempotency_header = ""
            max_in_flight = 2
            auth = { username = "u", password = "p" }
            headers = { "X-Source" = "destinations" }
            params = { page = "1" }
            resolve = { "hooks.example.com" = ["127.0.0.1", "::1"] }
            circuit_breaker = { failures = 3, open_for = "1m" }
            "#,
        )
        .unwrap();
        assert_eq!(config.method, Method::Put);
        assert_eq!(config.body, BodyMode::JsonArray);
        assert_eq!(config.timeout, Duration::from_secs(2));
        assert_eq!(
            config.retry_statuses,
            [StatusPattern::Code(409), StatusPattern::Class(5)]
        );
        assert_eq!(config.resolve["hooks.example.com"].len(), 2);
        assert_eq!(
            config.circuit_breaker.unwrap().open_for,
            Duration::from_secs(60)
        );
        assert!(config.idempotency_header.is_empty());
    }

    #[test]
    fn validation_names_the_key() {
        let base = || HttpConfig::new("http://x/");
        let cases = [
            (base().with_timeout(Duration::ZERO), "timeout"),
            (base().with_max_in_flight(0), "max_in_flight"),
            (
                base().with_body(BodyMode::Ndjson).with_method(Method::Head),
                "body",
            ),
            (
                base().with_retry_statuses(vec![StatusPattern::Code(200)]),
                "retry_statuses",
            ),
            (
                base().with_retry_statuses(vec![StatusPattern::Class(2)]),
                "retry_statuses",
            ),
            (
                base().with_circuit_breaker(CircuitBreakerConfig {
                    failures: 0,
                    ..Default::default()
                }),
                "circuit_breaker",
            ),
        ];
        for (config, key) in cases {
            match config.validate() {
                Err(HttpError::InvalidSetting { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
        assert!(base().validate().is_ok());
    }

    #[test]
    fn debug_hides_secrets() {
        let config = HttpConfig::new("https://user:pw@hooks.example.com/T0/B0/XyZsecret?k=qs")
            .with_header("X-Api-Key", "hdr-secret")
            .with_param("token", "param-secret")
            .with_auth(Auth::bearer("bearer-secret"))
            .with_signing_secret("whsec_c2lnbmluZy1zZWNyZXQ=");
        let text = format!("{config:?}");
        for secret in [
            "pw",
            "XyZsecret",
            "qs",
            "hdr-secret",
            "param-secret",
            "bearer-secret",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(!text.contains("c2lnbmluZy1zZWNyZXQ"));
        assert!(text.contains("hooks.example.com") && text.contains("X-Api-Key"));
    }
}
