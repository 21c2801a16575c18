//! The nine HTTP request methods.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, de};

/// One of the nine HTTP request methods.
///
/// Parsed case-insensitively. `HEAD`, `TRACE` and `CONNECT` requests carry no body; the
/// others carry the payload unless it is `null`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Method {
    Get,
    Head,
    #[default]
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
}

impl Method {
    /// Every method, in the order RFC 9110 lists them (PATCH last).
    pub const ALL: [Self; 9] = [
        Self::Get,
        Self::Head,
        Self::Post,
        Self::Put,
        Self::Delete,
        Self::Connect,
        Self::Options,
        Self::Trace,
        Self::Patch,
    ];

    /// The method's name in upper case.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
            Self::Options => "OPTIONS",
            Self::Trace => "TRACE",
            Self::Patch => "PATCH",
        }
    }

    /// Whether requests with this method may carry a body.
    pub fn allows_body(self) -> bool {
        !matches!(self, Self::Head | Self::Trace | Self::Connect)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Method`] from a string.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown http method {0:?}")]
pub struct UnknownMethod(String);

impl FromStr for Method {
    type Err = UnknownMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownMethod(s.chars().take(16).collect()))
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_round_trips_in_any_case() {
        for method in Method::ALL {
            assert_eq!(method.as_str().to_lowercase().parse::<Method>(), Ok(method));
            assert_eq!(method.to_string().parse::<Method>(), Ok(method));
        }
        assert!(serde_json::from_value::<Method>(serde_json::json!("FETCH")).is_err());
        assert_eq!(
            serde_json::from_value::<Method>(serde_json::json!("pAtCh")).unwrap(),
            Method::Patch
        );
    }
}
