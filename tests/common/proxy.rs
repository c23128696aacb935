//! A recording, fault-injecting HTTP/1.1 proxy on loopback, put between
//! the helper and SeaweedFS to see exactly which requests a run sends, and
//! to make the network misbehave the way real ones do.
//!
//! It forwards bytes unchanged (the `Host` header included, so SigV4
//! signatures stay valid) and records, per request, the method, path,
//! query and, for form-encoded bodies (the IAM API), the `Action`.
//! Keep-alive connections, `Content-Length` and chunked bodies are handled.
//!
//! With a [`FaultPlan`] ([`Proxy::set_faults`]) it also adds latency to
//! every request and, for a seeded pseudo-random share of requests, resets
//! the connection before forwarding, forwards but cuts the answer short
//! (the store did the work, the client never hears the whole answer), or
//! answers `503 SlowDown` itself. The choice depends only on the seed and
//! the request's position, so a failing run can be replayed.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A fault injected into one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The connection is reset (TCP RST) before the request is forwarded:
    /// the store never sees it.
    Reset,
    /// The request is forwarded and answered, but the client gets only the
    /// answer's head and half of its body before the connection closes.
    Truncate,
    /// The store is "busy": `503 SlowDown` with S3's XML error body, the
    /// request is not forwarded.
    SlowDown,
}

/// Which faults to inject. Percentages apply to each request that matches
/// `only` (all requests when empty), drawn from a generator seeded by
/// `seed` and the request's position among the matching ones.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    /// Added before forwarding every request.
    pub latency: Duration,
    /// Per cent of requests reset before forwarding.
    pub reset: u32,
    /// Per cent of requests whose answer is cut short.
    pub truncate: u32,
    /// Per cent of requests answered `503 SlowDown`.
    pub slow_down: u32,
    /// Seed of the fault choice.
    pub seed: u64,
    /// Inject at most this many faults (then forward faithfully). With a
    /// limit below the helper's attempts per request (5), a run must
    /// converge: no request can fail every time.
    pub limit: Option<usize>,
    /// Only requests matching one of these: a method (`PUT`), an IAM
    /// action (`CreateAccessKey`), or a method and a query parameter
    /// (`POST?uploadId`: CompleteMultipartUpload).
    pub only: Vec<&'static str>,
}

impl FaultPlan {
    /// Every matching request gets `fault`.
    pub fn always(fault: Fault) -> FaultPlan {
        let mut p = FaultPlan::default();
        match fault {
            Fault::Reset => p.reset = 100,
            Fault::Truncate => p.truncate = 100,
            Fault::SlowDown => p.slow_down = 100,
        }
        p
    }

    /// Every matching request gets a fault: a seeded mix of resets, cut
    /// answers and `503 SlowDown` (an outage that looks different each time).
    pub fn every_request(seed: u64) -> FaultPlan {
        FaultPlan {
            reset: 34,
            truncate: 33,
            slow_down: 33,
            seed,
            ..FaultPlan::default()
        }
    }

    /// True when a request is subject to faults (see [`FaultPlan::only`]).
    fn applies(&self, method: &str, query: &str, action: Option<&str>) -> bool {
        self.only.is_empty()
            || self.only.iter().any(|o| {
                if action == Some(*o) {
                    return true;
                }
                let (m, param) = o.split_once('?').unwrap_or((o, ""));
                (m.is_empty() || m == method)
                    && (param.is_empty()
                        || query
                            .split('&')
                            .any(|kv| kv.split('=').next() == Some(param)))
            })
    }

    /// The fault (if any) for the `n`-th matching request.
    fn choose(&self, n: usize) -> Option<Fault> {
        let roll = (splitmix64(self.seed ^ (n as u64).wrapping_mul(0x9e37_79b9)) % 100) as u32;
        if roll < self.reset {
            Some(Fault::Reset)
        } else if roll < self.reset + self.truncate {
            Some(Fault::Truncate)
        } else if roll < self.reset + self.truncate + self.slow_down {
            Some(Fault::SlowDown)
        } else {
            None
        }
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What the connection threads share.
#[derive(Default)]
struct Shared {
    log: Mutex<Vec<Recorded>>,
    faults: Mutex<FaultPlan>,
    seen: AtomicUsize,
    injected: AtomicUsize,
}

/// One forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `GET`, `PUT`, `POST`, ...
    pub method: String,
    /// The path, percent-encoded as sent.
    pub path: String,
    /// The raw query string (empty when none).
    pub query: String,
    /// The `Action=` of a form-encoded body (IAM), if any.
    pub action: Option<String>,
    /// The status the upstream answered (0 when it did not).
    pub status: u16,
    /// The fault injected into this request, if any.
    pub fault: Option<Fault>,
}

impl Recorded {
    /// True for requests that may change the store: anything but GET and
    /// HEAD, except IAM `Get*`/`List*` actions (POSTs by protocol).
    pub fn is_mutating(&self) -> bool {
        match self.method.as_str() {
            "GET" | "HEAD" => false,
            "POST" => match &self.action {
                Some(a) => !(a.starts_with("Get") || a.starts_with("List")),
                None => true,
            },
            _ => true,
        }
    }

    /// A short form for assertion messages: `PUT /b/nix-cache-info`,
    /// `GET /b?policy`, `IAM CreateAccessKey`.
    pub fn describe(&self) -> String {
        match &self.action {
            Some(a) => format!("IAM {a}"),
            None if self.query.is_empty() => format!("{} {}", self.method, self.path),
            None => format!("{} {}?{}", self.method, self.path, self.query),
        }
    }
}

/// A running proxy; stops accepting when dropped.
pub struct Proxy {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    shared: Arc<Shared>,
    listener_addr: SocketAddr,
    stop: Arc<Mutex<bool>>,
}

impl Proxy {
    /// Starts a proxy forwarding to `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> Proxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("upstream is http://IP:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let listener_addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(Mutex::new(false));
        let (shared2, stop2) = (shared.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if *stop2.lock().unwrap() {
                    return;
                }
                let Ok(client) = conn else { continue };
                let shared = shared2.clone();
                thread::spawn(move || {
                    let _ = serve(client, upstream, &shared);
                });
            }
        });
        Proxy {
            endpoint: format!("http://{listener_addr}"),
            shared,
            listener_addr,
            stop,
        }
    }

    /// Every request forwarded so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The mutating requests forwarded so far.
    pub fn mutating(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(Recorded::is_mutating)
            .collect()
    }

    /// Forgets what was recorded.
    pub fn clear(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    /// Injects faults from now on (`FaultPlan::default()`: none); the
    /// count of injected faults starts again at zero.
    pub fn set_faults(&self, plan: FaultPlan) {
        *self.shared.faults.lock().unwrap() = plan;
        self.shared.injected.store(0, Ordering::SeqCst);
        self.shared.seen.store(0, Ordering::SeqCst);
    }

    /// How many faults were injected since the last [`Proxy::set_faults`].
    pub fn faults_injected(&self) -> usize {
        self.shared.injected.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        *self.stop.lock().unwrap() = true;
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.listener_addr);
    }
}

/// One HTTP message head: the start line and the header lines.
struct Head {
    raw: Vec<u8>,
    start_line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a head up to the blank line; `None` at a clean end of stream.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        raw.extend_from_slice(line.as_bytes());
        let trimmed = line.trim_end_matches(['\r', '\n']).to_string();
        if trimmed.is_empty() {
            break;
        }
        lines.push(trimmed);
    }
    let start_line = lines.first().cloned().unwrap_or_default();
    let headers = lines
        .iter()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Some(Head {
        raw,
        start_line,
        headers,
    }))
}

/// Reads a body framed by `Content-Length` or chunked encoding, returning
/// its raw bytes (framing included, for forwarding) and its payload.
fn read_body(r: &mut impl BufRead, head: &Head) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    if head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        let mut raw = Vec::new();
        let mut payload = Vec::new();
        loop {
            let mut size_line = String::new();
            r.read_line(&mut size_line)?;
            raw.extend_from_slice(size_line.as_bytes());
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    let mut l = String::new();
                    r.read_line(&mut l)?;
                    raw.extend_from_slice(l.as_bytes());
                    if l.trim().is_empty() {
                        return Ok((raw, payload));
                    }
                }
            }
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            raw.extend_from_slice(&chunk);
            payload.extend_from_slice(&chunk[..size]);
        }
    }
    let len: usize = head
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok((body.clone(), body))
}

/// Serves one client connection, request by request, over one upstream
/// connection.
fn serve(client: TcpStream, upstream: SocketAddr, shared: &Shared) -> std::io::Result<()> {
    let log = &shared.log;
    let mut client_w = client.try_clone()?;
    let mut client_r = BufReader::new(client);
    let up = TcpStream::connect(upstream)?;
    let mut up_w = up.try_clone()?;
    let mut up_r = BufReader::new(up);
    while let Some(req) = read_head(&mut client_r)? {
        let (raw_body, payload) = read_body(&mut client_r, &req)?;
        let mut parts = req.start_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target.clone(), String::new()),
        };
        let action = req
            .header("content-type")
            .filter(|ct| ct.starts_with("application/x-www-form-urlencoded"))
            .and_then(|_| {
                String::from_utf8_lossy(&payload)
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("Action=").map(str::to_string))
            });
        let plan = shared.faults.lock().unwrap().clone();
        let fault = plan.applies(&method, &query, action.as_deref()).then(|| {
            let n = shared.seen.fetch_add(1, Ordering::SeqCst);
            plan.choose(n)
        });
        let fault = fault.flatten().filter(|_| {
            let injected = shared.injected.fetch_add(1, Ordering::SeqCst);
            if plan.limit.is_some_and(|l| injected >= l) {
                shared.injected.fetch_sub(1, Ordering::SeqCst);
                return false;
            }
            true
        });
        let index = {
            let mut l = log.lock().unwrap();
            l.push(Recorded {
                method: method.clone(),
                path,
                query,
                action,
                status: 0,
                fault,
            });
            l.len() - 1
        };
        if !plan.latency.is_zero() {
            thread::sleep(plan.latency);
        }
        match fault {
            Some(Fault::Reset) => {
                // Linger 0: closing sends RST instead of FIN.
                socket2::SockRef::from(&client_w).set_linger(Some(Duration::ZERO))?;
                return Ok(());
            }
            Some(Fault::SlowDown) => {
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                            <Message>Please reduce your request rate.</Message></Error>";
                write!(
                    client_w,
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                )?;
                client_w.flush()?;
                if let Some(r) = log.lock().unwrap().get_mut(index) {
                    r.status = 503;
                }
                continue;
            }
            Some(Fault::Truncate) | None => {}
        }
        up_w.write_all(&req.raw)?;
        up_w.write_all(&raw_body)?;
        up_w.flush()?;
        let Some(resp) = read_head(&mut up_r)? else {
            break;
        };
        let status: u16 = resp
            .start_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if let Some(r) = log.lock().unwrap().get_mut(index) {
            r.status = status;
        }
        let bodiless = method == "HEAD" || status == 204 || status == 304 || status < 200;
        let raw = if bodiless {
            Vec::new()
        } else {
            read_body(&mut up_r, &resp)?.0
        };
        if fault == Some(Fault::Truncate) {
            // Half the head when there is no body, else the head and half the body.
            if raw.is_empty() {
                client_w.write_all(&resp.raw[..resp.raw.len() / 2])?;
            } else {
                client_w.write_all(&resp.raw)?;
                client_w.write_all(&raw[..raw.len() / 2])?;
            }
            client_w.flush()?;
            break;
        }
        client_w.write_all(&resp.raw)?;
        client_w.write_all(&raw)?;
        client_w.flush()?;
        if resp
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            break;
        }
    }
    let _ = client_w.shutdown(Shutdown::Both);
    Ok(())
}
