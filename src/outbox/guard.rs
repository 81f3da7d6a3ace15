//! Webhook safety: which addresses a webhook may reach, a resolver that enforces it at connect
//! time (closing DNS rebinding), request signing, and the retry schedule.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Loopback, private, link-local (cloud metadata), CGNAT, multicast, reserved and the IPv6
/// equivalents, including IPv4 addresses embedded in IPv6 ones.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || a >= 240 // reserved 240/4
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return forbidden_v4(v4);
    }
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (incl. fd00:ec2::254)
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
}

/// IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::/96).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !(s[6] == 0 && s[7] <= 1) {
        return Some(tail);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return Some(tail);
    }
    None
}

const PRIVATE_HINT: &str =
    "set TELEMENTAL_WEBHOOK_ALLOW_PRIVATE=true to allow loopback and private addresses";

/// Parses and checks a webhook URL without resolving it: http(s), a host, no credentials, and
/// no forbidden IP literal or `localhost` unless private targets are allowed.
pub fn check_webhook_url(raw: &str, allow_private: bool) -> Result<reqwest::Url, String> {
    if raw.len() > 2048 {
        return Err("must be at most 2048 characters".into());
    }
    let url = reqwest::Url::parse(raw).map_err(|e| format!("is not a valid URL: {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err("must be an http:// or https:// URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a username or password".into());
    }
    let host = match url.host() {
        Some(h) => h,
        None => return Err("must name a host".into()),
    };
    if allow_private {
        return Ok(url);
    }
    let forbidden = match host {
        url::Host::Ipv4(ip) => forbidden_v4(ip),
        url::Host::Ipv6(ip) => forbidden_v6(ip),
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
    };
    if forbidden {
        return Err(format!(
            "points at a loopback, private or link-local address; {PRIVATE_HINT}"
        ));
    }
    Ok(url)
}

/// Resolves the URL's host and refuses it when any address is forbidden.
pub async fn check_resolved(url: &reqwest::Url, allow_private: bool) -> Result<(), String> {
    let host = url
        .host_str()
        .ok_or("must name a host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|_| format!("host {host:?} does not resolve"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("host {host:?} does not resolve"));
    }
    if !allow_private && addrs.iter().any(|a| is_forbidden_ip(a.ip())) {
        return Err(format!(
            "host {host:?} resolves to a loopback, private or link-local address; {PRIVATE_HINT}"
        ));
    }
    Ok(())
}

/// A DNS resolver for the webhook client that refuses forbidden addresses at connect time, so
/// a name that passed registration cannot be re-pointed inside later (DNS rebinding). reqwest
/// does not call it for IP-literal URLs: callers check those with [`check_webhook_url`].
pub struct GuardedResolver {
    allow_private: bool,
}

impl GuardedResolver {
    pub fn new(allow_private: bool) -> Self {
        GuardedResolver { allow_private }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private && addrs.iter().any(|a| is_forbidden_ip(a.ip())) {
                return Err(format!("{host} resolves to a forbidden address").into());
            }
            let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

/// The client webhooks are sent with: guarded resolver, no redirects (one could point
/// inside), bounded time.
pub fn webhook_client(allow_private: bool, timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver::new(allow_private)))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("telemental-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("static client settings are valid")
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// `t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let sig = hex::encode(mac(secret, timestamp, body).finalize().into_bytes());
    format!("t={timestamp},v1={sig}")
}

/// What a receiver does: constant-time comparison, and stale timestamps refused.
pub fn verify_signature(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(sig)) = (t, v1) else {
        return false;
    };
    (now - t).abs() <= tolerance_secs && mac(secret, t, body).verify_slice(&sig).is_ok()
}

/// Delay before retry number `failed_attempts`: base, 2×base, 4×base … capped at one hour.
pub fn retry_delay(base: Duration, failed_attempts: u32) -> Duration {
    if failed_attempts == 0 {
        return Duration::ZERO;
    }
    let factor = 2u32.saturating_pow(failed_attempts - 1);
    base.saturating_mul(factor).min(Duration::from_secs(3600))
}

/// A signing secret: `whsec_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    format!("whsec_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_and_allowed_addresses() {
        for (ip, forbidden) in [
            ("127.0.0.1", true),
            ("10.1.2.3", true),
            ("172.15.255.255", false),
            ("172.16.0.0", true),
            ("172.31.255.255", true),
            ("172.32.0.0", false),
            ("192.168.1.1", true),
            ("169.254.169.254", true),
            ("100.63.255.255", false),
            ("100.64.0.1", true),
            ("0.1.2.3", true),
            ("255.255.255.255", true),
            ("224.0.0.1", true),
            ("198.18.0.1", true),
            ("240.0.0.1", true),
            ("8.8.8.8", false),
            ("::1", true),
            ("::", true),
            ("fe80::1", true),
            ("fc00::1", true),
            ("fd00:ec2::254", true),
            ("fec0::1", true),
            ("ff02::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:8.8.8.8", false),
            ("64:ff9b::a00:1", true),
            ("64:ff9b::808:808", false),
            ("2606:4700::1111", false),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(is_forbidden_ip(ip), forbidden, "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_before_any_request() {
        assert!(check_webhook_url("https://example.org/hook", false).is_ok());
        for bad in [
            "ftp://example.org/",
            "not a url",
            "https://user:pw@example.org/",
            "http://127.0.0.1:9/x",
            "http://[::1]/",
            "http://localhost/",
            "http://api.localhost./",
            "http://169.254.169.254/latest/meta-data",
        ] {
            assert!(check_webhook_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_webhook_url("http://127.0.0.1:9/x", true).is_ok());
        assert!(check_webhook_url("ftp://127.0.0.1/", true).is_err());
        assert!(check_webhook_url(&format!("https://e.org/{}", "a".repeat(2100)), false).is_err());
    }

    #[tokio::test]
    async fn resolved_names_are_checked_too() {
        let url = reqwest::Url::parse("http://localhost:9/").unwrap();
        assert!(check_resolved(&url, false).await.is_err());
        assert!(check_resolved(&url, true).await.is_ok());
        let r = GuardedResolver::new(false);
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(reqwest::dns::Resolve::resolve(&r, name).await.is_err());
    }

    #[tokio::test]
    async fn the_client_refuses_private_names_at_connect_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        let url = format!("http://localhost:{port}/");
        let strict = webhook_client(false, Duration::from_secs(2));
        assert!(strict.post(&url).send().await.is_err());
        let open = webhook_client(true, Duration::from_secs(2));
        assert_eq!(open.post(&url).send().await.unwrap().status(), 200);
    }

    #[test]
    fn signatures_match_an_independent_computation() {
        // printf '1700000000.{"id":"1"}' | openssl dgst -sha256 -hmac whsec_test
        let h = signature_header("whsec_test", 1_700_000_000, br#"{"id":"1"}"#);
        assert_eq!(
            h,
            "t=1700000000,v1=11bf4466ea17c3df3fd743af0b435368e16b7a05eb8eced85e8c4670767bdec5"
        );
        let body = br#"{"id":"1"}"#;
        assert!(verify_signature("whsec_test", &h, body, 1_700_000_100, 300));
        assert!(!verify_signature(
            "whsec_test",
            &h,
            br#"{"id":"2"}"#,
            1_700_000_100,
            300
        ));
        assert!(!verify_signature(
            "whsec_other",
            &h,
            body,
            1_700_000_100,
            300
        ));
        assert!(!verify_signature(
            "whsec_test",
            &h,
            body,
            1_700_001_000,
            300
        ));
        assert!(!verify_signature(
            "whsec_test",
            "garbage",
            body,
            1_700_000_000,
            300
        ));
    }

    #[test]
    fn retries_back_off_exponentially_up_to_an_hour() {
        let base = Duration::from_secs(5);
        let got: Vec<u64> = (0..6).map(|n| retry_delay(base, n).as_secs()).collect();
        assert_eq!(got, vec![0, 5, 10, 20, 40, 80]);
        assert_eq!(retry_delay(base, 11).as_secs(), 3600);
        assert_eq!(retry_delay(base, 1000).as_secs(), 3600);
    }

    #[test]
    fn secrets_are_random_and_well_formed() {
        let a = new_secret();
        assert!(a.starts_with("whsec_") && a.len() == 6 + 64);
        assert!(a[6..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, new_secret());
    }
}
