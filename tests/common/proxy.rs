//! A recording HTTP/1.1 proxy on loopback, put between the helper and
//! SeaweedFS to see exactly which requests a run sends.
//!
//! It forwards bytes unchanged (the `Host` header included, so SigV4
//! signatures stay valid) and records, per request, the method, path,
//! query and, for form-encoded bodies (the IAM API), the `Action`.
//! Keep-alive connections, `Content-Length` and chunked bodies are handled.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

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
    log: Arc<Mutex<Vec<Recorded>>>,
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
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(Mutex::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if *stop2.lock().unwrap() {
                    return;
                }
                let Ok(client) = conn else { continue };
                let log = log2.clone();
                thread::spawn(move || {
                    let _ = serve(client, upstream, &log);
                });
            }
        });
        Proxy {
            endpoint: format!("http://{listener_addr}"),
            log,
            listener_addr,
            stop,
        }
    }

    /// Every request forwarded so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
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
        self.log.lock().unwrap().clear();
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
fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    log: &Mutex<Vec<Recorded>>,
) -> std::io::Result<()> {
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
        let index = {
            let mut l = log.lock().unwrap();
            l.push(Recorded {
                method: method.clone(),
                path,
                query,
                action,
                status: 0,
            });
            l.len() - 1
        };
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
