//! The HTTP layer every store API shares: one reqwest client per endpoint
//! (rustls, optional CA bundle, kept-alive connections), SigV4 signing with
//! the `aws-sigv4` crate, bounded retries with backoff, and errors that name
//! the endpoint. S3, IAM and the MinIO admin API are built on [`Endpoint`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use url::Url;

use crate::credentials::Credentials;
use crate::error::{Error, Result};

/// How to reach one store endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Base URL, e.g. `https://s3.example.org` (a path prefix is kept).
    pub url: Url,
    /// SigV4 region (`us-east-1` unless the store says otherwise).
    pub region: String,
    /// Allow `http://` to a host that is not loopback.
    pub allow_insecure_http: bool,
    /// Extra PEM CA bundle for stores with self-signed certificates.
    pub ca_file: Option<PathBuf>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// How many times a failed request is retried (connection errors, 5xx,
    /// `SlowDown`) before the error is returned.
    pub max_retries: u32,
}

impl EndpointConfig {
    /// An endpoint with the defaults: region `us-east-1`, 30 s timeout, 4 retries.
    pub fn new(url: &str) -> Result<Self> {
        Ok(EndpointConfig {
            url: parse_endpoint_url(url, "endpoint")?,
            region: "us-east-1".into(),
            allow_insecure_http: false,
            ca_file: None,
            timeout: Duration::from_secs(30),
            max_retries: 4,
        })
    }
}

/// Parses a store URL, naming `field` in the error.
pub fn parse_endpoint_url(url: &str, field: &str) -> Result<Url> {
    let parsed = Url::parse(url).map_err(|e| {
        Error::config(
            field,
            format!("`{url}` is not a valid URL ({e}); write it like https://s3.example.org"),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::config(
            field,
            format!("`{url}` must start with http:// or https://"),
        ));
    }
    if parsed.host_str().is_none() {
        return Err(Error::config(field, format!("`{url}` has no host")));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Error::config(
            field,
            "must not carry credentials; put them in a credentials file",
        ));
    }
    Ok(parsed)
}

/// True when `url` points at the local machine (127.0.0.0/8, ::1, localhost).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        None => false,
    }
}

/// Refuses plain http to a remote host unless explicitly allowed.
pub fn check_transport_security(url: &Url, allow_insecure_http: bool, field: &str) -> Result<()> {
    if url.scheme() == "http" && !is_loopback(url) && !allow_insecure_http {
        return Err(Error::config(
            field,
            format!(
                "`{url}` uses plain http to a host that is not loopback: credentials and \
                 signatures would cross the network unprotected; use https, or set \
                 allowInsecureHttp = true (--allow-insecure-http) if the network is trusted"
            ),
        ));
    }
    Ok(())
}

/// A request about to be sent: relative to the endpoint's base URL.
#[derive(Debug, Clone)]
pub struct Request {
    /// HTTP method.
    pub method: http::Method,
    /// Path below the endpoint's base URL, already percent-encoded, starting with `/`.
    pub path: String,
    /// Query parameters (unencoded); order does not matter for signing.
    pub query: Vec<(String, String)>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body; signed by its SHA-256 unless `unsigned_payload` is set.
    pub body: Bytes,
    /// Send `UNSIGNED-PAYLOAD` instead of hashing the body (large uploads).
    pub unsigned_payload: bool,
    /// Count this request as a read although its method is not GET/HEAD
    /// (API calls such as IAM `Get*`/`List*` that are POSTs by protocol).
    pub read_only: bool,
}

impl Request {
    /// A request with no query, headers or body.
    pub fn new(method: http::Method, path: impl Into<String>) -> Self {
        Request {
            method,
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Bytes::new(),
            unsigned_payload: false,
            read_only: false,
        }
    }

    /// Adds a query parameter.
    pub fn query(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.query.push((k.into(), v.into()));
        self
    }

    /// Adds a header.
    pub fn header(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Marks the request as one that only reads, whatever its method.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// True for requests that only read (GET, HEAD, or marked read-only).
    pub fn is_read(&self) -> bool {
        self.read_only || matches!(self.method, http::Method::GET | http::Method::HEAD)
    }
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: http::StatusCode,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Response {
    /// The body as (lossy) text, for error messages and XML parsing.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as a string, if present and ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Counts of requests sent through one [`Endpoint`], split by kind.
#[derive(Debug, Default)]
pub struct RequestStats {
    reads: AtomicU64,
    writes: AtomicU64,
}

impl RequestStats {
    /// Requests that only read (GET/HEAD, and API calls marked read-only).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
    /// Requests that may change the store.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

/// One store endpoint with a connection pool, a signer and retries.
#[derive(Debug, Clone)]
pub struct Endpoint {
    client: reqwest::Client,
    config: Arc<EndpointConfig>,
    /// Requests sent (each retry counts).
    pub stats: Arc<RequestStats>,
}

impl Endpoint {
    /// Builds the client; refuses insecure http and unreadable CA bundles.
    pub fn new(config: EndpointConfig) -> Result<Self> {
        check_transport_security(&config.url, config.allow_insecure_http, "endpoint")?;
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10).min(config.timeout))
            .pool_max_idle_per_host(64)
            .user_agent(concat!("nix-binary-cache/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca_file {
            let pem = crate::fsutil::read_regular(ca)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::invalid_file(ca, format!("is not a PEM CA bundle: {e}")))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder.build().map_err(|e| Error::Transport {
            endpoint: config.url.to_string(),
            message: format!("cannot build the HTTP client: {e}"),
        })?;
        Ok(Endpoint {
            client,
            config: Arc::new(config),
            stats: Arc::default(),
        })
    }

    /// The same client, connection pool and counters with another retry
    /// budget (e.g. none while probing a store that may not be up yet).
    pub fn with_max_retries(&self, max_retries: u32) -> Endpoint {
        let mut config = (*self.config).clone();
        config.max_retries = max_retries;
        Endpoint {
            client: self.client.clone(),
            config: Arc::new(config),
            stats: self.stats.clone(),
        }
    }

    /// The endpoint's configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// The underlying reqwest client (for streaming uploads).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The full URL of `req` (base URL + path + encoded query).
    pub fn url_for(&self, req: &Request) -> Url {
        let mut url = self.config.url.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}{}", req.path));
        if req.query.is_empty() {
            url.set_query(None);
        } else {
            let q = req
                .query
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() && k != "prefix" && k != "delimiter" {
                        aws_encode(k)
                    } else {
                        format!("{}={}", aws_encode(k), aws_encode(v))
                    }
                })
                .collect::<Vec<_>>()
                .join("&");
            url.set_query(Some(&q));
        }
        url
    }

    /// Sends `req` signed with `creds` for `service` (`s3`, `iam`), or
    /// anonymously when `creds` is `None`. Retries connection errors, 5xx
    /// and `SlowDown` with exponential backoff; any other status is returned
    /// as a [`Response`] for the caller to interpret.
    pub async fn send(
        &self,
        req: &Request,
        creds: Option<&Credentials>,
        service: &str,
    ) -> Result<Response> {
        let mut attempt = 0u32;
        loop {
            let counter = if req.is_read() {
                &self.stats.reads
            } else {
                &self.stats.writes
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let outcome = self.send_once(req, creds, service).await;
            let retryable = match &outcome {
                Ok(r) => {
                    // 501 Not Implemented is an answer, not a hiccup.
                    (r.status.is_server_error() && r.status != http::StatusCode::NOT_IMPLEMENTED)
                        || r.status == http::StatusCode::TOO_MANY_REQUESTS
                        || (r.status.is_client_error()
                            && r.text().contains("<Code>SlowDown</Code>"))
                }
                Err(_) => true,
            };
            if !retryable || attempt >= self.config.max_retries {
                return outcome.map_err(|e| match e {
                    Error::Transport { endpoint, message } if attempt > 0 => Error::Transport {
                        endpoint,
                        message: format!(
                            "{message} (gave up after {} attempts; check that the store is \
                             running and reachable)",
                            attempt + 1
                        ),
                    },
                    e => e,
                });
            }
            attempt += 1;
            let delay = backoff(attempt);
            let why = match &outcome {
                Ok(r) => format!("HTTP {}", r.status.as_u16()),
                Err(Error::Transport { message, .. }) => message.clone(),
                Err(e) => e.to_string(),
            };
            let mut url = self.url_for(req);
            url.set_query(None);
            eprintln!(
                "{} {url}: {why}; retry {attempt}/{} in {:.1}s",
                req.method,
                self.config.max_retries,
                delay.as_secs_f64()
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn send_once(
        &self,
        req: &Request,
        creds: Option<&Credentials>,
        service: &str,
    ) -> Result<Response> {
        let url = self.url_for(req);
        let mut builder = self.client.request(req.method.clone(), url.clone());
        let mut headers: Vec<(String, String)> = req.headers.clone();
        if let Some(creds) = creds {
            let signed = sign_headers(
                &req.method,
                &url,
                &req.headers,
                if req.unsigned_payload {
                    None
                } else {
                    Some(&req.body)
                },
                creds,
                &self.config.region,
                service,
                SystemTime::now(),
            )?;
            headers.extend(signed);
        }
        for (k, v) in &headers {
            builder = builder.header(k, v);
        }
        let resp = builder
            .body(req.body.clone())
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// A transport error naming this endpoint, with the cause chain.
    pub fn transport_error(&self, e: &reqwest::Error) -> Error {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        if e.is_timeout() {
            message.push_str(&format!(
                " (no answer within {}s)",
                self.config.timeout.as_secs()
            ));
        }
        Error::Transport {
            endpoint: self.config.url.to_string(),
            message,
        }
    }
}

/// Probes a service that may still be starting until it is up, for at most
/// `limit`, sleeping [`backoff`] between probes.
///
/// `probe` gets the time left and answers `Ok(Ok(value))` when the service
/// is up, `Ok(Err(why))` when it is not yet (retried), `Err` to give up at
/// once. `waiting(why, attempt, delay, left)` logs each wait; once `limit`
/// has passed, `give_up(why)` is the error.
pub async fn wait_until_up<T, Fut>(
    limit: Duration,
    mut probe: impl FnMut(Duration) -> Fut,
    mut waiting: impl FnMut(&str, u32, Duration, Duration),
    give_up: impl FnOnce(&str) -> Error,
) -> Result<T>
where
    Fut: std::future::Future<Output = Result<std::result::Result<T, String>>>,
{
    let start = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        let why = match probe(limit.saturating_sub(start.elapsed())).await? {
            Ok(value) => return Ok(value),
            Err(why) => why,
        };
        attempt += 1;
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(give_up(&why));
        }
        let delay = backoff(attempt).min(left);
        waiting(&why, attempt, delay, left);
        tokio::time::sleep(delay).await;
    }
}

/// Exponential backoff with jitter: 0.2 s, 0.4 s, 0.8 s ... capped at 5 s.
pub fn backoff(attempt: u32) -> Duration {
    let base = 200u64.saturating_mul(1 << attempt.min(8).saturating_sub(1));
    let mut j = [0u8; 2];
    let _ = getrandom::getrandom(&mut j);
    let jitter = u16::from_le_bytes(j) as u64 % (base / 4 + 1);
    Duration::from_millis((base + jitter).min(5000))
}

/// Percent-encoding as AWS wants it (RFC 3986 unreserved characters kept).
pub fn aws_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-encodes an object key for a URL path (slashes kept).
pub fn encode_key(key: &str) -> String {
    key.split('/').map(aws_encode).collect::<Vec<_>>().join("/")
}

/// Computes the SigV4 headers for a request (with the `aws-sigv4` crate).
///
/// `body` is `None` for `UNSIGNED-PAYLOAD`. Returns the headers to add.
#[allow(clippy::too_many_arguments)]
pub fn sign_headers(
    method: &http::Method,
    url: &Url,
    headers: &[(String, String)],
    body: Option<&[u8]>,
    creds: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>> {
    let identity = aws_credential_types::Credentials::new(
        creds.access_key_id.clone(),
        creds.secret_access_key.clone(),
        None,
        None,
        "nix-binary-cache",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    if service == "s3" {
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| Error::Other(format!("cannot sign request: {e}")))?
        .into();
    let signable_body = match body {
        Some(b) => SignableBody::Bytes(b),
        None => SignableBody::UnsignedPayload,
    };
    let signable = SignableRequest::new(
        method.as_str(),
        url.as_str(),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        signable_body,
    )
    .map_err(|e| Error::Other(format!("cannot sign request to {url}: {e}")))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| Error::Other(format!("cannot sign request to {url}: {e}")))?
        .into_parts();
    let (out, _) = instructions.into_parts();
    Ok(out
        .into_iter()
        .map(|h| (h.name().to_string(), h.value().to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        for u in [
            "http://127.0.0.1:9000",
            "http://[::1]:1",
            "http://localhost/",
        ] {
            assert!(is_loopback(&Url::parse(u).unwrap()), "{u}");
        }
        assert!(!is_loopback(&Url::parse("http://10.0.0.1").unwrap()));
        assert!(
            check_transport_security(
                &Url::parse("http://s3.example.org").unwrap(),
                false,
                "endpoint"
            )
            .is_err()
        );
        assert!(
            check_transport_security(
                &Url::parse("http://s3.example.org").unwrap(),
                true,
                "endpoint"
            )
            .is_ok()
        );
        assert!(
            check_transport_security(
                &Url::parse("https://s3.example.org").unwrap(),
                false,
                "endpoint"
            )
            .is_ok()
        );
    }

    #[test]
    fn encodes_keys() {
        assert_eq!(encode_key("nar/a b+c.nar.zst"), "nar/a%20b%2Bc.nar.zst");
        assert_eq!(aws_encode("a/b=c"), "a%2Fb%3Dc");
    }

    #[test]
    fn signing_adds_authorization() {
        let url = Url::parse("http://127.0.0.1:9000/bucket/key").unwrap();
        let h = sign_headers(
            &http::Method::GET,
            &url,
            &[],
            Some(b""),
            &Credentials::new("AK", "SK"),
            "us-east-1",
            "s3",
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
        .unwrap();
        let auth = h.iter().find(|(k, _)| k == "authorization").unwrap();
        assert!(
            auth.1
                .starts_with("AWS4-HMAC-SHA256 Credential=AK/20231114/us-east-1/s3/aws4_request")
        );
        assert!(!auth.1.contains("SK"));
    }
}
