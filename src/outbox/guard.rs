//! Webhook safety: which addresses a webhook may reach, a resolver that enforces it at connect
//! time (closing DNS rebinding), request signing, and the retry schedule.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Whether a webhook may not connect to `ip`: every block of the IANA IPv4 and IPv6
/// special-purpose address registries (loopback, private, link-local with the cloud metadata
/// address, CGNAT, documentation, benchmarking, protocol assignments, AS112, AMT, 6to4 relay,
/// discard, ORCHID, Teredo, SRv6 …), multicast, and IPv4 addresses embedded in IPv6 ones
/// (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64, 6to4, Teredo).
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

/// `(network, prefix length)` blocks no webhook may reach (IANA IPv4 special-purpose address
/// registry, plus multicast and the limited broadcast address).
const FORBIDDEN_V4: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),       // "this network" (RFC 791)
    ([10, 0, 0, 0], 8),      // private (RFC 1918)
    ([100, 64, 0, 0], 10),   // shared address space, CGNAT (RFC 6598)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local, cloud metadata (RFC 3927)
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments (RFC 6890), incl. DS-Lite, NAT64 discovery
    ([192, 0, 2, 0], 24),    // documentation TEST-NET-1
    ([192, 31, 196, 0], 24), // AS112-v4 (RFC 7535)
    ([192, 52, 193, 0], 24), // AMT (RFC 7450)
    ([192, 88, 99, 0], 24),  // deprecated 6to4 relay anycast (RFC 7526)
    ([192, 168, 0, 0], 16),  // private
    ([192, 175, 48, 0], 24), // direct delegation AS112 (RFC 7534)
    ([198, 18, 0, 0], 15),   // benchmarking (RFC 2544)
    ([198, 51, 100, 0], 24), // documentation TEST-NET-2
    ([203, 0, 113, 0], 24),  // documentation TEST-NET-3
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved (RFC 1112), incl. 255.255.255.255 broadcast
];

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let ip = u32::from(ip);
    FORBIDDEN_V4.iter().any(|(net, len)| {
        let mask = u32::MAX << (32 - u32::from(*len));
        ip & mask == u32::from_be_bytes(*net) & mask
    })
}

/// Blocks of global unicast space (2000::/3) that are special-purpose (IANA IPv6
/// special-purpose address registry).
const FORBIDDEN_V6_GLOBAL: &[(u128, u8)] = &[
    (0x2001_0000 << 96, 23), // IETF protocol assignments: Teredo, benchmarking, ORCHID …
    (0x2001_0db8 << 96, 32), // documentation
    (0x2002 << 112, 16),     // 6to4 (deprecated; reaches an embedded IPv4 via relays)
    (0x2620_004f_8000 << 80, 48), // direct delegation AS112
    (0x3fff << 112, 20),     // documentation (RFC 9637)
];

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    let in_block = |net: u128, len: u8| {
        let mask = u128::MAX << (128 - u32::from(len));
        bits & mask == net & mask
    };
    // IPv4-mapped ::ffff:0:0/96 and NAT64 64:ff9b::/96 reach the embedded IPv4 address: judge
    // that. (The local-use NAT64 prefix 64:ff9b:1::/48 is not global: refused below.)
    if in_block(0xffff << 32, 96) || in_block(0x0064_ff9b << 96, 96) {
        return forbidden_v4(Ipv4Addr::from(bits as u32));
    }
    // Only global unicast space is reachable; everything else (::/8 with loopback,
    // unspecified, IPv4-compatible and IPv4-translated addresses, 64:ff9b:1::/48, 100::/64
    // discard, 5f00::/16 SRv6, fc00::/7 unique local, fe80::/10 link-local, fec0::/10,
    // ff00::/8 multicast) is refused.
    if !in_block(0x2000 << 112, 3) {
        return true;
    }
    FORBIDDEN_V6_GLOBAL
        .iter()
        .any(|(net, len)| in_block(*net, *len))
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
            // IPv4 special-purpose registry, edges included.
            ("0.1.2.3", true),
            ("10.1.2.3", true),
            ("100.63.255.255", false),
            ("100.64.0.1", true),
            ("100.127.255.255", true),
            ("100.128.0.0", false),
            ("127.0.0.1", true),
            ("169.254.169.254", true),
            ("172.15.255.255", false),
            ("172.16.0.0", true),
            ("172.31.255.255", true),
            ("172.32.0.0", false),
            ("192.0.0.1", true),
            ("192.0.0.9", true),
            ("192.0.0.170", true),
            ("192.0.1.1", false),
            ("192.0.2.1", true),
            ("192.31.196.1", true),
            ("192.52.193.1", true),
            ("192.88.99.1", true),
            ("192.168.1.1", true),
            ("192.175.48.1", true),
            ("198.17.255.255", false),
            ("198.18.0.1", true),
            ("198.19.255.255", true),
            ("198.20.0.0", false),
            ("198.51.100.1", true),
            ("203.0.113.1", true),
            ("224.0.0.1", true),
            ("239.255.255.255", true),
            ("240.0.0.1", true),
            ("255.255.255.255", true),
            ("8.8.8.8", false),
            ("1.1.1.1", false),
            // IPv6 special-purpose registry.
            ("::1", true),
            ("::", true),
            ("::7f00:1", true),
            ("::808:808", true),
            ("100::1", true),
            ("100:0:0:1::1", true),
            ("2001::1", true),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", true),
            ("2001:1::1", true),
            ("2001:2::1", true),
            ("2001:3::1", true),
            ("2001:4:112::1", true),
            ("2001:20::1", true),
            ("2001:1ff:ffff::1", true),
            ("2001:200::1", false),
            ("2001:db8::1", true),
            ("2620:4f:8000::1", true),
            ("2620:4f:8001::1", false),
            ("3fff::1", true),
            ("5f00::1", true),
            ("fe80::1", true),
            ("fc00::1", true),
            ("fd00:ec2::254", true),
            ("fec0::1", true),
            ("ff02::1", true),
            // Embedded IPv4: mapped, translated, NAT64, 6to4, Teredo.
            ("::ffff:127.0.0.1", true),
            ("::ffff:169.254.169.254", true),
            ("::ffff:8.8.8.8", false),
            ("::ffff:0:127.0.0.1", true),
            ("::ffff:0:8.8.8.8", true),
            ("64:ff9b::a00:1", true),
            ("64:ff9b::7f00:1", true),
            ("64:ff9b::808:808", false),
            ("64:ff9b:1::a9fe:a9fe", true),
            ("64:ff9b:1::808:808", true),
            ("2002:7f00:1::", true),
            ("2002:a9fe:a9fe::", true),
            ("2002:808:808::", true),
            // Ordinary global unicast.
            ("2606:4700::1111", false),
            ("2a00:1450:4009:80b::200e", false),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(is_forbidden_ip(ip), forbidden, "{ip}");
        }
    }

    #[test]
    fn every_address_the_red_team_got_through_is_refused_as_a_url() {
        for url in [
            "http://[::ffff:0:127.0.0.1]/",
            "http://[2002:7f00:1::]/",
            "http://[2002:a9fe:a9fe::]/",
            "http://[64:ff9b:1::a9fe:a9fe]/",
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "http://192.0.0.1/",
            "http://192.88.99.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::ffff:7f00:1]/",
        ] {
            assert!(check_webhook_url(url, false).is_err(), "{url}");
            assert!(check_webhook_url(url, true).is_ok(), "{url}");
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
