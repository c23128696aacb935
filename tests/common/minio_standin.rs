//! A **stand-in for a MinIO server**, not MinIO. The MinIO server is AGPL
//! and never runs in this project's tests; this loopback HTTP/1.1 server
//! takes its place where a request must be answered:
//!
//! - it **records** every request: method, path, query, headers, body;
//! - it **verifies the SigV4 signature** of each one with the credentials it
//!   knows (its own implementation, independent of the `aws-sigv4` crate the
//!   helper uses), and answers `InvalidAccessKeyId` / `SignatureDoesNotMatch`
//!   as MinIO does;
//! - it **replays the documented answers** of the admin API v3 from an
//!   in-memory model of users, canned policies and attachments (encrypted
//!   bodies where MinIO encrypts them, the error codes and statuses of the
//!   wire spec, the 2023-01 and pre-2023 attach generations), or replies the
//!   test queued for a path.
//!
//! It also answers the one S3 call the writer check sends to MinIO's
//! endpoint (`GET /{bucket}?location`, signed as a user it knows), so that a
//! provisioning run can be pointed at it for the identity plane.
//!
//! Its crypto uses the helper's `minio::crypto`, which `tests/minio_crypto.rs`
//! proves against MinIO's Python SDK; the conformance tests decrypt what was
//! recorded with the SDK itself.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use nix_binary_cache::minio::crypto;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// What the signature check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No `Authorization` header.
    Anonymous,
    /// A valid signature by a known identity.
    Valid {
        /// The signing access key.
        access_key: String,
        /// The region of the credential scope (may be empty).
        region: String,
        /// `SignedHeaders`, as sent.
        signed_headers: Vec<String>,
    },
    /// Present but wrong; the reason (an S3 error code first).
    Invalid(String),
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// The path as sent (percent-encoded).
    pub path: String,
    /// Query parameters, decoded, in the order sent.
    pub query: Vec<(String, String)>,
    /// Headers with lower-case names, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The signature check.
    pub auth: Auth,
    /// The status the stand-in answered with.
    pub status: u16,
}

impl Recorded {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The query sorted by key and value, for order-independent comparison.
    pub fn sorted_query(&self) -> Vec<(String, String)> {
        let mut q = self.query.clone();
        q.sort();
        q
    }

    /// The admin operation (`add-user`, `idp/builtin/policy/attach`), if any.
    pub fn admin_op(&self) -> Option<&str> {
        self.path.strip_prefix("/minio/admin/v3/")
    }

    /// True for requests that cannot change anything.
    pub fn is_read(&self) -> bool {
        self.method == "GET" || self.method == "HEAD"
    }

    /// `METHOD path?query`, for assertion messages.
    pub fn line(&self) -> String {
        let q: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "{} {}?{} -> {}",
            self.method,
            self.path,
            q.join("&"),
            self.status
        )
    }
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// An empty answer.
    pub fn empty(status: u16) -> Self {
        Reply {
            status,
            headers: vec![],
            body: vec![],
        }
    }

    /// A plain JSON answer.
    pub fn json(status: u16, v: &Value) -> Self {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: serde_json::to_vec(v).unwrap(),
        }
    }

    /// An admin error as MinIO writes it (`writeErrorResponseJSON`).
    pub fn admin_error(status: u16, code: &str, message: &str, resource: &str) -> Self {
        Reply::json(
            status,
            &json!({"Code": code, "Message": message, "Resource": resource,
                    "RequestId": "17F0000000000000", "HostId": "standin"}),
        )
    }

    /// An S3 XML error.
    pub fn s3_error(status: u16, code: &str, message: &str) -> Self {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/xml".into())],
            body: format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                 <Message>{message}</Message><RequestId>17F0</RequestId></Error>"
            )
            .into_bytes(),
        }
    }

    /// A madmin-encrypted JSON answer.
    pub fn encrypted(v: &Value, secret: &str) -> Self {
        Reply {
            status: 200,
            headers: vec![("Content-Type".into(), "application/octet-stream".into())],
            body: crypto::encrypt(&serde_json::to_vec(v).unwrap(), secret),
        }
    }
}

/// Which generation of the builtin attach call the stand-in plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachRoute {
    /// Since RELEASE.2023-06-23: octet-stream required, encrypted 200
    /// answer, 400 `XMinioAdminPolicyChangeAlreadyApplied` on a no-op.
    Modern,
    /// RELEASE.2023-01-02 ... 2023-06: 201 empty, 409
    /// `XMinioPolicyAlreadyAttached`.
    Early2023,
    /// Older servers: no such route (426 `XMinioAdminVersionMismatch`).
    Missing,
}

/// A user of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Secret key.
    pub secret: String,
    /// `status` enabled.
    pub enabled: bool,
    /// Attached policies, in attach order.
    pub policies: Vec<String>,
}

/// The in-memory model the stand-in answers from.
#[derive(Debug)]
pub struct MinioState {
    /// The root credentials (the only admin).
    pub root: (String, String),
    /// Users by access key.
    pub users: BTreeMap<String, User>,
    /// Canned policies by name, as stored (normalised).
    pub policies: BTreeMap<String, Value>,
    /// Buckets that `GET /{bucket}?location` finds.
    pub buckets: BTreeSet<String>,
    /// The attach generation.
    pub attach_route: AttachRoute,
    /// Answer this many more requests as a starting server (503; `live`
    /// answers 200 flagged offline).
    pub starting: u32,
    /// Queued replies: (path, reply), each used once by the next request to
    /// that path, after it is recorded and before the model is consulted.
    pub scripted: VecDeque<(String, Reply)>,
}

impl MinioState {
    fn new(root_key: &str, root_secret: &str) -> Self {
        let mut policies = BTreeMap::new();
        // MinIO's built-in policies exist from the start.
        policies.insert(
            "readwrite".to_string(),
            json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::*"]}]}),
        );
        MinioState {
            root: (root_key.into(), root_secret.into()),
            users: BTreeMap::new(),
            policies,
            buckets: BTreeSet::new(),
            attach_route: AttachRoute::Modern,
            starting: 0,
            scripted: VecDeque::new(),
        }
    }

    fn secret_of(&self, access_key: &str) -> Option<String> {
        if access_key == self.root.0 {
            return Some(self.root.1.clone());
        }
        self.users
            .get(access_key)
            .filter(|u| u.enabled)
            .map(|u| u.secret.clone())
    }
}

/// The running stand-in. Stops accepting when dropped.
pub struct MinioStandIn {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<Mutex<MinioState>>,
    log: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl MinioStandIn {
    /// Starts a stand-in whose root user is `root_key` / `root_secret`.
    pub fn start(root_key: &str, root_secret: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(MinioState::new(root_key, root_secret)));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (state, log, stop) = (state.clone(), log.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (state, log) = (state.clone(), log.clone());
                    std::thread::spawn(move || serve(conn, &state, &log));
                }
            });
        }
        MinioStandIn {
            url: format!("http://127.0.0.1:{port}"),
            state,
            log,
            stop,
            port,
        }
    }

    /// Every request recorded so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }

    /// Reads or changes the model.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut MinioState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// Resets the model to a fresh server with the same root user.
    pub fn reset(&self) {
        self.with_state(|s| {
            let root = s.root.clone();
            *s = MinioState::new(&root.0, &root.1);
        });
        self.clear();
    }

    /// Queues `reply` for the next request to `path`.
    pub fn push_reply(&self, path: &str, reply: Reply) {
        self.with_state(|s| s.scripted.push_back((path.to_string(), reply)));
    }
}

impl Drop for MinioStandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Serves one kept-alive connection.
fn serve(conn: TcpStream, state: &Mutex<MinioState>, log: &Mutex<Vec<Recorded>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, target) = (method.to_string(), target.to_string());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let chunked = get("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let len: usize = get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if !chunked && reader.read_exact(&mut body).is_err() {
            return;
        }
        let close = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let (path, raw_query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target.clone(), String::new()),
        };
        let query = parse_query(&raw_query);
        let mut rec = Recorded {
            method,
            path,
            query,
            headers,
            body,
            auth: Auth::Anonymous,
            status: 0,
        };
        let reply = if chunked {
            // MinIO needs Content-Length for admin bodies; neither client chunks.
            Reply::admin_error(411, "MissingContentLength", "chunked body", &rec.path)
        } else {
            let mut st = state.lock().unwrap();
            rec.auth = verify_sigv4(&rec, &raw_query, &st);
            handle(&rec, &mut st)
        };
        rec.status = reply.status;
        log.lock().unwrap().push(rec.clone());
        if write_reply(&mut writer, &rec.method, &reply).is_err() || close || chunked {
            return;
        }
    }
}

fn write_reply(w: &mut TcpStream, method: &str, r: &Reply) -> std::io::Result<()> {
    let reason = http::StatusCode::from_u16(r.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nServer: MinIO-stand-in\r\n",
        r.status
    );
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let no_body = r.status == 204 || r.status == 304 || method == "HEAD";
    if !no_body {
        head.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    if !no_body {
        w.write_all(&r.body)?;
    }
    w.flush()
}

/// The stand-in's answer to one request.
fn handle(rec: &Recorded, st: &mut MinioState) -> Reply {
    let path = rec.path.as_str();
    if let Some(probe) = path.strip_prefix("/minio/health/") {
        if st.starting > 0 {
            st.starting -= 1;
            let mut r = Reply::empty(if probe == "live" { 200 } else { 503 });
            r.headers
                .push(("x-minio-server-status".into(), "offline".into()));
            return r;
        }
        return Reply::empty(200);
    }
    if let Some(i) = st.scripted.iter().position(|(p, _)| p == path) {
        return st.scripted.remove(i).unwrap().1;
    }
    let admin = path.starts_with("/minio/admin/");
    let signer = match &rec.auth {
        Auth::Valid { access_key, .. } => access_key.clone(),
        Auth::Anonymous => {
            return if admin {
                Reply::admin_error(403, "AccessDenied", "Access Denied.", path)
            } else {
                Reply::s3_error(403, "AccessDenied", "Access Denied.")
            };
        }
        Auth::Invalid(why) => {
            let code = why.split(':').next().unwrap_or("AccessDenied");
            return if admin {
                Reply::admin_error(403, code, why, path)
            } else {
                Reply::s3_error(403, code, why)
            };
        }
    };
    if st.starting > 0 {
        st.starting -= 1;
        return Reply::admin_error(
            503,
            "XMinioServerNotInitialized",
            "Server not initialized yet, please try again.",
            path,
        );
    }
    if !admin {
        return s3_answer(rec, st, path);
    }
    let Some(op) = path.strip_prefix("/minio/admin/v3/") else {
        return Reply::admin_error(
            426,
            "XMinioAdminVersionMismatch",
            "This 'admin' API is not supported by server in 'mode-server-xl'",
            path,
        );
    };
    if signer != st.root.0 {
        return Reply::admin_error(403, "AccessDenied", "Access Denied.", path);
    }
    let secret = st.root.1.clone();
    let err = |status, code: &str, message: &str| Reply::admin_error(status, code, message, path);
    let no_user = || {
        Reply::admin_error(
            404,
            "XMinioAdminNoSuchUser",
            "The specified user does not exist.",
            path,
        )
    };
    match (rec.method.as_str(), op) {
        ("PUT", "add-user") => {
            let Some(ak) = rec.param("accessKey") else {
                return err(400, "InvalidArgument", "accessKey missing");
            };
            let Some(req) = crypto::decrypt(&rec.body, &secret)
                .ok()
                .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
            else {
                return err(
                    400,
                    "XMinioAdminConfigBadJSON",
                    "JSON configuration provided is of incorrect format",
                );
            };
            if ak.len() < 3 || ak.contains('=') || ak.contains(',') {
                return err(
                    400,
                    "XMinioAdminInvalidAccessKey",
                    "The access key is invalid.",
                );
            }
            let user_secret = req["secretKey"].as_str().unwrap_or("").to_string();
            if user_secret.len() < 8 {
                return err(
                    400,
                    "XMinioAdminInvalidSecretKey",
                    "The secret key is invalid.",
                );
            }
            if ak == st.root.0 {
                return err(
                    403,
                    "XMinioInvalidIAMCredentials",
                    "The security token included in the request is invalid",
                );
            }
            let enabled = matches!(req["status"].as_str(), Some("enabled" | "on"));
            let policies = st
                .users
                .get(ak)
                .map(|u| u.policies.clone())
                .unwrap_or_default();
            st.users.insert(
                ak.to_string(),
                User {
                    secret: user_secret,
                    enabled,
                    policies,
                },
            );
            Reply::empty(200)
        }
        ("GET", "user-info") => match rec.param("accessKey").and_then(|a| st.users.get(a)) {
            Some(u) => {
                let mut v = json!({
                    "status": if u.enabled { "enabled" } else { "disabled" },
                    "updatedAt": "2025-01-01T00:00:00Z",
                });
                if !u.policies.is_empty() {
                    v["policyName"] = json!(u.policies.join(","));
                }
                Reply::json(200, &v)
            }
            None => no_user(),
        },
        ("PUT", "add-canned-policy") => {
            let Some(name) = rec.param("name") else {
                return err(400, "InvalidArgument", "name missing");
            };
            let Ok(doc) = serde_json::from_slice::<Value>(&rec.body) else {
                return err(
                    400,
                    "XMinioMalformedIAMPolicy",
                    "policy has invalid resource",
                );
            };
            if doc["Version"].as_str().unwrap_or("").is_empty() {
                return err(400, "MalformedPolicy", "Policy has no Version");
            }
            st.policies.insert(name.to_string(), normalise_policy(&doc));
            Reply::empty(200)
        }
        ("GET", "info-canned-policy") => {
            let Some(doc) = rec.param("name").and_then(|n| st.policies.get(n)) else {
                return err(
                    404,
                    "XMinioAdminNoSuchPolicy",
                    "The canned policy does not exist.",
                );
            };
            match rec.param("v") {
                None => Reply {
                    status: 200,
                    headers: vec![],
                    body: serde_json::to_string_pretty(doc).unwrap().into_bytes(),
                },
                Some("2") => Reply::json(
                    200,
                    &json!({"PolicyName": rec.param("name"), "Policy": doc,
                            "CreateDate": "2025-01-01T00:00:00Z",
                            "UpdateDate": "2025-01-01T00:00:00Z"}),
                ),
                Some(_) => err(400, "XMinioAdminInvalidArgument", "invalid version"),
            }
        }
        ("POST", "idp/builtin/policy/attach") => attach(rec, st, &secret, path),
        ("PUT", "set-user-or-group-policy") => {
            let (Some(names), Some(user), Some(_)) = (
                rec.param("policyName"),
                rec.param("userOrGroup"),
                rec.param("isGroup"),
            ) else {
                return err(400, "InvalidArgument", "missing query parameter");
            };
            let names: Vec<String> = names
                .split(',')
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect();
            if let Some(missing) = names.iter().find(|n| !st.policies.contains_key(*n)) {
                return err(
                    404,
                    "XMinioAdminNoSuchPolicy",
                    &format!("{missing}: canned policy does not exist"),
                );
            }
            match st.users.get_mut(user) {
                Some(u) => {
                    u.policies = names;
                    Reply::empty(200)
                }
                None => no_user(),
            }
        }
        _ => err(
            426,
            "XMinioAdminVersionMismatch",
            "This 'admin' API is not supported by server in 'mode-server-xl'",
        ),
    }
}

fn attach(rec: &Recorded, st: &mut MinioState, secret: &str, path: &str) -> Reply {
    let err = |status, code: &str, message: &str| Reply::admin_error(status, code, message, path);
    if st.attach_route == AttachRoute::Missing {
        return err(
            426,
            "XMinioAdminVersionMismatch",
            "This 'admin' API is not supported by server in 'mode-server-xl'",
        );
    }
    if st.attach_route == AttachRoute::Modern
        && rec.header("content-type") != Some("application/octet-stream")
    {
        return err(
            400,
            "BadRequest",
            "Content-Type must be application/octet-stream",
        );
    }
    let Some(req) = crypto::decrypt(&rec.body, secret)
        .ok()
        .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
    else {
        return err(500, "InternalError", "We encountered an internal error");
    };
    let user = req["user"].as_str().unwrap_or("").to_string();
    let wanted: Vec<String> = req["policies"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if !st.users.contains_key(&user) {
        return err(
            404,
            "XMinioAdminNoSuchUser",
            "The specified user does not exist.",
        );
    }
    let existing = st.users[&user].policies.clone();
    let new: Vec<String> = wanted
        .into_iter()
        .filter(|p| !existing.contains(p))
        .collect();
    if new.is_empty() {
        return match st.attach_route {
            AttachRoute::Early2023 => err(
                409,
                "XMinioPolicyAlreadyAttached",
                "The specified policy is already attached.",
            ),
            _ => err(
                400,
                "XMinioAdminPolicyChangeAlreadyApplied",
                "The specified policy change is already in effect.",
            ),
        };
    }
    if let Some(missing) = new.iter().find(|p| !st.policies.contains_key(*p)) {
        return err(
            404,
            "XMinioAdminNoSuchPolicy",
            &format!("{missing}: canned policy does not exist"),
        );
    }
    st.users
        .get_mut(&user)
        .unwrap()
        .policies
        .extend(new.iter().cloned());
    match st.attach_route {
        AttachRoute::Early2023 => Reply::empty(201),
        _ => Reply::encrypted(
            &json!({"policiesAttached": new, "updatedAt": "2025-01-01T00:00:00Z"}),
            secret,
        ),
    }
}

/// The S3 call a writer check sends: `GET /{bucket}?location`.
fn s3_answer(rec: &Recorded, st: &MinioState, path: &str) -> Reply {
    let bucket = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if rec.method != "GET" || rec.param("location").is_none() || path.trim_matches('/') != bucket {
        return Reply::s3_error(
            501,
            "NotImplemented",
            "The MinIO stand-in answers only GET ?location on the S3 plane",
        );
    }
    if !st.buckets.contains(bucket) {
        return Reply::s3_error(404, "NoSuchBucket", "The specified bucket does not exist");
    }
    Reply {
        status: 200,
        headers: vec![("Content-Type".into(), "application/xml".into())],
        body: b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint \
                xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"></LocationConstraint>"
            .to_vec(),
    }
}

/// Stores a policy the way MinIO hands it back: single strings become
/// arrays, `Action` and `Resource` come back in another order (MinIO
/// iterates Go maps), keys in its own order.
pub fn normalise_policy(doc: &Value) -> Value {
    let as_list = |v: &Value| -> Vec<Value> {
        match v {
            Value::Array(a) => a.clone(),
            Value::Null => vec![],
            other => vec![other.clone()],
        }
    };
    let statements: Vec<Value> = as_list(&doc["Statement"])
        .iter()
        .map(|s| {
            let mut actions = as_list(&s["Action"]);
            actions.reverse();
            let mut resources = as_list(&s["Resource"]);
            resources.reverse();
            let mut out = serde_json::Map::new();
            if let Some(sid) = s.get("Sid").filter(|v| v.as_str() != Some("")) {
                out.insert("Sid".into(), sid.clone());
            }
            out.insert("Effect".into(), s["Effect"].clone());
            out.insert("Action".into(), Value::Array(actions));
            out.insert("Resource".into(), Value::Array(resources));
            if let Some(c) = s.get("Condition") {
                out.insert("Condition".into(), c.clone());
            }
            Value::Object(out)
        })
        .collect();
    json!({"Version": doc["Version"], "Statement": statements})
}

fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 2 < b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn uri_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Verifies AWS SigV4 in the `Authorization` header, written from the AWS
/// documentation (canonical request, string to sign, signing key), with
/// MinIO's extra rules: service `s3`, `host` signed, `x-amz-content-sha256`
/// present and equal to the body's hash, at most 15 minutes of skew.
fn verify_sigv4(rec: &Recorded, raw_query: &str, st: &MinioState) -> Auth {
    let Some(auth) = rec.header("authorization") else {
        return Auth::Anonymous;
    };
    let bad = |code: &str, why: &str| Auth::Invalid(format!("{code}: {why}"));
    let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return bad("AccessDenied", "not AWS4-HMAC-SHA256");
    };
    let mut fields = BTreeMap::new();
    for part in rest.split(',') {
        if let Some((k, v)) = part.trim().split_once('=') {
            fields.insert(k.to_string(), v.to_string());
        }
    }
    let (Some(cred), Some(signed), Some(signature)) = (
        fields.get("Credential"),
        fields.get("SignedHeaders"),
        fields.get("Signature"),
    ) else {
        return bad("AuthorizationHeaderMalformed", "missing field");
    };
    let scope: Vec<&str> = cred.split('/').collect();
    if scope.len() != 5 || scope[4] != "aws4_request" {
        return bad("AuthorizationHeaderMalformed", "bad credential scope");
    }
    let (access_key, date, region, service) = (scope[0], scope[1], scope[2], scope[3]);
    if service != "s3" {
        return bad("AuthorizationParametersError", "service must be s3");
    }
    let Some(secret) = st.secret_of(access_key) else {
        return bad(
            "InvalidAccessKeyId",
            "The Access Key Id you provided does not exist in our records.",
        );
    };
    let signed_headers: Vec<String> = signed.split(';').map(String::from).collect();
    if !signed_headers.iter().any(|h| h == "host") {
        return bad("AccessDenied", "host is not signed");
    }
    let Some(content_sha) = rec.header("x-amz-content-sha256") else {
        return bad("AccessDenied", "x-amz-content-sha256 missing");
    };
    if content_sha != hex::encode(Sha256::digest(&rec.body)) {
        return bad("XAmzContentSHA256Mismatch", "body hash differs");
    }
    let Some(amz_date) = rec.header("x-amz-date") else {
        return bad("AccessDenied", "x-amz-date missing");
    };
    if !amz_date.starts_with(date) {
        return bad(
            "SignatureDoesNotMatch",
            "scope date differs from x-amz-date",
        );
    }
    if let Some(t) = parse_amz_date(amz_date) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if now.abs_diff(t) > 15 * 60 {
            return bad("RequestTimeTooSkewed", "clock skew");
        }
    } else {
        return bad("AccessDenied", "bad x-amz-date");
    }
    let mut query: Vec<(String, String)> = parse_query(raw_query)
        .into_iter()
        .map(|(k, v)| (uri_encode(&k), uri_encode(&v)))
        .collect();
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut canonical_headers = String::new();
    for name in &signed_headers {
        let values: Vec<String> = rec
            .headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        if values.is_empty() {
            return bad("AccessDenied", &format!("signed header {name} missing"));
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let canonical = format!(
        "{}\n{}\n{canonical_query}\n{canonical_headers}\n{signed}\n{content_sha}",
        rec.method, rec.path
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    if hex::encode(hmac_sha256(&key, string_to_sign.as_bytes())) != *signature {
        return bad(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    Auth::Valid {
        access_key: access_key.to_string(),
        region: region.to_string(),
        signed_headers,
    }
}

/// `YYYYMMDDTHHMMSSZ` to seconds since the epoch.
fn parse_amz_date(s: &str) -> Option<u64> {
    if s.len() != 16 || !s.ends_with('Z') || &s[8..9] != "T" {
        return None;
    }
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().ok();
    let (y, m, d) = (n(0, 4)?, n(4, 6)?, n(6, 8)?);
    let (hh, mm, ss) = (n(9, 11)?, n(11, 13)?, n(13, 15)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    u64::try_from(days * 86400 + hh * 3600 + mm * 60 + ss).ok()
}
