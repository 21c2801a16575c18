//! The wire: the HTTP client, the address checks it connects through, and one exchange.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::RETRY_AFTER;
use reqwest::{RequestBuilder, Url};
use url::Host;

use crate::config::HttpConfig;
use crate::error::HttpError;
use crate::response::RECORDED_BODY_LIMIT;

/// Why `ip` must not be contacted unless `allow_link_local` is set, if it must not.
///
/// IPv4 addresses written as IPv6 (mapped, `::ffff:a.b.c.d`, or NAT64, `64:ff9b::a.b.c.d`)
/// are judged as the IPv4 address they stand for.
pub(crate) fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => refusal_v4(v4),
            None => refusal_v6(v6),
        },
    }
}

fn refusal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const METADATA: [Ipv4Addr; 4] = [
        Ipv4Addr::new(169, 254, 169, 254),
        Ipv4Addr::new(169, 254, 170, 2),
        Ipv4Addr::new(100, 100, 100, 200),
        Ipv4Addr::new(192, 0, 0, 192),
    ];
    if METADATA.contains(&ip) {
        Some("cloud metadata address")
    } else if ip.is_link_local() {
        Some("link-local address")
    } else {
        None
    }
}

fn refusal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    const AWS_METADATA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254);
    if ip == AWS_METADATA {
        Some("cloud metadata address")
    } else if ip.is_unicast_link_local() {
        Some("link-local address")
    } else {
        None
    }
}

fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0];
    nat64.then(|| Ipv4Addr::from(((u32::from(s[6])) << 16) | u32::from(s[7])))
}

/// Checks a URL whose host is an IP address; host names are checked once resolved.
///
/// The client connects to an address written in the URL without asking the resolver, so
/// this check must run before every request, on the final URL.
pub(crate) fn check_url(url: &Url, allow_link_local: bool) -> Result<(), &'static str> {
    let ip = match url.host() {
        Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
        Some(Host::Domain(_)) => return Ok(()),
        None => return Err("url without a host"),
    };
    match refusal(ip) {
        Some(reason) if !allow_link_local => Err(reason),
        _ => Ok(()),
    }
}

/// A host name resolved only to refused addresses.
#[derive(Debug)]
pub(crate) struct RefusedAddress {
    host: String,
    ip: IpAddr,
    reason: &'static str,
}

#[cfg(test)]
impl RefusedAddress {
    pub(crate) fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} resolves to {}, a {}",
            self.host, self.ip, self.reason
        )
    }
}

impl StdError for RefusedAddress {}

/// Resolves host names (from `resolve` or DNS) and drops refused addresses, failing with
/// [`RefusedAddress`] when none is left.
#[derive(Clone, Debug)]
pub(crate) struct GuardedResolver {
    allow_link_local: bool,
    pinned: Arc<HashMap<String, Vec<IpAddr>>>,
}

impl GuardedResolver {
    pub(crate) fn new(config: &HttpConfig) -> Self {
        let pinned = config
            .resolve
            .iter()
            .map(|(host, ips)| (host.to_ascii_lowercase(), ips.clone()))
            .collect();
        Self {
            allow_link_local: config.allow_link_local,
            pinned: Arc::new(pinned),
        }
    }

    /// The addresses of `host` that may be contacted.
    pub(crate) async fn lookup(&self, host: &str) -> Result<Vec<SocketAddr>, BoxError> {
        let host = host.to_ascii_lowercase();
        let found: Vec<SocketAddr> = match self.pinned.get(&host) {
            Some(ips) => ips.iter().map(|ip| SocketAddr::new(*ip, 0)).collect(),
            None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
        };
        if self.allow_link_local {
            return Ok(found);
        }
        let mut refused = None;
        let allowed: Vec<SocketAddr> = found
            .into_iter()
            .filter(|addr| match refusal(addr.ip()) {
                Some(reason) => {
                    refused.get_or_insert((addr.ip(), reason));
                    false
                }
                None => true,
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (true, Some((ip, reason))) => Err(Box::new(RefusedAddress { host, ip, reason })),
            _ => Ok(allowed),
        }
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this.lookup(name.as_str()).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The reqwest client every request of one destination goes through.
pub(crate) fn build_client(config: &HttpConfig) -> Result<reqwest::Client, HttpError> {
    reqwest::Client::builder()
        // NOTE: a proxy would resolve host names itself, out of reach of the address
        // checks, so environment proxies are ignored.
        .no_proxy()
        // A redirect could point at a refused address, and would turn a POST into a GET.
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(GuardedResolver::new(config))
        .connect_timeout(config.timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("destinations-http/", env!("CARGO_PKG_VERSION")))
        .tls_danger_accept_invalid_certs(config.danger_accept_invalid_certs)
        .build()
        .map_err(|e| HttpError::Client {
            source: e.without_url(),
        })
}

/// What came back from one request.
#[derive(Debug)]
pub(crate) struct Exchange {
    /// The status, if a response head arrived.
    pub(crate) status: Option<u16>,
    /// The `Retry-After` header, if any and readable.
    pub(crate) retry_after: Option<String>,
    /// The start of the body, at most [`RECORDED_BODY_LIMIT`] bytes.
    pub(crate) body: String,
    /// The transport error: no response, or a body cut off. Carries no URL.
    pub(crate) error: Option<reqwest::Error>,
    /// From sending to the end of reading.
    pub(crate) latency: Duration,
}

/// Sends `request` and reads the start of the response body.
///
/// Reading stops after [`RECORDED_BODY_LIMIT`] bytes: a longer body is not an error.
pub(crate) async fn exchange(request: RequestBuilder) -> Exchange {
    let started = Instant::now();
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            return Exchange {
                status: None,
                retry_after: None,
                body: String::new(),
                error: Some(e.without_url()),
                latency: started.elapsed(),
            };
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    let mut body = Vec::new();
    let mut error = None;
    while body.len() < RECORDED_BODY_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => {
                error = Some(e.without_url());
                break;
            }
        }
    }
    body.truncate(RECORDED_BODY_LIMIT);
    Exchange {
        status: Some(status),
        retry_after,
        body: String::from_utf8_lossy(&body).into_owned(),
        error,
        latency: started.elapsed(),
    }
}

/// The [`RefusedAddress`] somewhere in `err`'s chain.
pub(crate) fn find_refusal<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a RefusedAddress> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(refused) = e.downcast_ref::<RefusedAddress>() {
            return Some(refused);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_link_local_and_metadata_addresses() {
        let refused = [
            "169.254.169.254",
            "169.254.0.1",
            "169.254.170.2",
            "100.100.100.200",
            "192.0.0.192",
            "fe80::1",
            "febf::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ];
        for ip in refused {
            assert!(refusal(ip.parse().unwrap()).is_some(), "{ip}");
        }
        let allowed = [
            "127.0.0.1",
            "10.0.0.1",
            "8.8.8.8",
            "::1",
            "fec0::1",
            "::ffff:127.0.0.1",
        ];
        for ip in allowed {
            assert_eq!(refusal(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn checks_literal_hosts_in_every_spelling() {
        let refused = [
            "http://169.254.169.254/latest/meta-data/",
            "http://0xa9fea9fe/",
            "http://2852039166/",
            "http://0251.0376.0251.0376/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[fe80::1]:9/",
        ];
        for url in refused {
            let url: Url = url.parse().unwrap();
            assert!(check_url(&url, false).is_err(), "{url}");
            assert!(check_url(&url, true).is_ok(), "{url}");
        }
        for url in [
            "http://127.0.0.1:1/",
            "http://metadata.example/",
            "https://[::1]/",
        ] {
            assert!(check_url(&url.parse().unwrap(), false).is_ok(), "{url}");
        }
    }

    #[tokio::test]
    async fn resolver_drops_refused_addresses() {
        let config = HttpConfig::new("http://x/")
            .with_resolve(
                "only-metadata.test",
                vec!["169.254.169.254".parse().unwrap()],
            )
            .with_resolve(
                "mixed.test",
                vec!["fe80::1".parse().unwrap(), "127.0.0.1".parse().unwrap()],
            );
        let resolver = GuardedResolver::new(&config);
        let err = resolver.lookup("Only-Metadata.test").await.unwrap_err();
        let refused = find_refusal(err.as_ref()).expect("a refusal");
        assert_eq!(refused.reason(), "cloud metadata address");
        assert_eq!(
            refused.to_string(),
            "only-metadata.test resolves to 169.254.169.254, a cloud metadata address"
        );
        let mixed = resolver.lookup("mixed.test").await.unwrap();
        assert_eq!(mixed, ["127.0.0.1:0".parse().unwrap()]);

        let open = GuardedResolver::new(&config.clone().with_allow_link_local(true));
        assert_eq!(open.lookup("only-metadata.test").await.unwrap().len(), 1);
        assert!(!resolver.lookup("localhost").await.unwrap().is_empty());
    }
}
