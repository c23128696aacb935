//! The S3 bucket plane on top of [`crate::http::Endpoint`]: objects, buckets,
//! bucket policies, lifecycle, listing and multipart uploads, with error
//! answers parsed into [`S3Error`] so callers can tell `NoSuchKey` from
//! `AccessDenied` from `SignatureDoesNotMatch`.

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;

use crate::credentials::Credentials;
use crate::error::{Error, Result};
use crate::http::{Endpoint, Request, Response, encode_key};

/// An S3 error answer: the HTTP status and the `<Code>` / `<Message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    /// HTTP status.
    pub status: u16,
    /// `<Code>`, e.g. `NoSuchBucket`, `AccessDenied` (empty for bodiless answers).
    pub code: String,
    /// `<Message>`.
    pub message: String,
}

impl S3Error {
    /// Parses an error answer (XML body, or a bare status for HEAD).
    pub fn from_response(resp: &Response) -> S3Error {
        #[derive(Deserialize)]
        struct ErrorXml {
            #[serde(rename = "Code", default)]
            code: String,
            #[serde(rename = "Message", default)]
            message: String,
        }
        let parsed: Option<ErrorXml> = quick_xml::de::from_str(&resp.text()).ok();
        let (code, message) = parsed.map(|e| (e.code, e.message)).unwrap_or_default();
        S3Error {
            status: resp.status.as_u16(),
            code,
            message,
        }
    }
}

/// A client for one bucket-plane endpoint, signing as one identity (or
/// anonymously).
#[derive(Debug, Clone)]
pub struct S3Client {
    /// The endpoint (connection pool, retries, request counters).
    pub endpoint: Endpoint,
    creds: Option<Credentials>,
    path_style: bool,
}

/// Metadata of an object from HEAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// `Content-Length`.
    pub size: u64,
    /// `ETag` without quotes.
    pub etag: String,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ListedObject {
    /// Object key.
    #[serde(rename = "Key")]
    pub key: String,
    /// Size in bytes.
    #[serde(rename = "Size", default)]
    pub size: u64,
}

impl S3Client {
    /// A client signing with `creds` (`None`: anonymous requests).
    pub fn new(endpoint: Endpoint, creds: Option<Credentials>, path_style: bool) -> Self {
        S3Client {
            endpoint,
            creds,
            path_style,
        }
    }

    /// The same endpoint and connection pool, signing as another identity.
    pub fn with_credentials(&self, creds: Option<Credentials>) -> Self {
        S3Client {
            endpoint: self.endpoint.clone(),
            creds,
            path_style: self.path_style,
        }
    }

    /// The identity this client signs as.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.creds.as_ref()
    }

    /// The request path for `bucket` and optional `key`.
    ///
    /// Virtual-host style is not expressible as a path on a shared endpoint
    /// URL; it is handled by giving the bucket's own URL as the endpoint.
    pub fn path(&self, bucket: &str, key: Option<&str>) -> String {
        match (self.path_style, key) {
            (true, Some(k)) => format!("/{bucket}/{}", encode_key(k)),
            (true, None) => format!("/{bucket}"),
            (false, Some(k)) => format!("/{}", encode_key(k)),
            (false, None) => "/".to_string(),
        }
    }

    /// The public URL of an object (for anonymous readers).
    pub fn object_url(&self, bucket: &str, key: &str) -> String {
        self.endpoint
            .url_for(&Request::new(Method::GET, self.path(bucket, Some(key))))
            .to_string()
    }

    /// Sends a request as this client's identity.
    pub async fn send(&self, req: &Request) -> Result<Response> {
        self.endpoint.send(req, self.creds.as_ref(), "s3").await
    }

    /// Sends and turns any non-2xx answer into a store error naming `operation`.
    pub async fn send_ok(&self, operation: &str, req: &Request) -> Result<Response> {
        let resp = self.send(req).await?;
        if resp.status.is_success() {
            Ok(resp)
        } else {
            Err(self.error(operation, &resp))
        }
    }

    /// Sends and sorts the answer: `Ok(Some)` for 2xx, `Ok(None)` for 404,
    /// any other status a store error naming `operation`.
    async fn send_found(&self, operation: &str, req: &Request) -> Result<Option<Response>> {
        let resp = self.send(req).await?;
        match resp.status {
            s if s.is_success() => Ok(Some(resp)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.error(operation, &resp)),
        }
    }

    /// A [`Error::Store`] for a failed answer, with a hint for common codes.
    pub fn error(&self, operation: &str, resp: &Response) -> Error {
        let e = S3Error::from_response(resp);
        let hint = match e.code.as_str() {
            "InvalidAccessKeyId" => {
                "the access key id is unknown to the store: check the credentials file"
            }
            "SignatureDoesNotMatch" => {
                "the secret key is wrong (or the region differs): check the credentials file"
            }
            "AccessDenied" => "the identity is not allowed to do this: check its policy",
            "NoSuchBucket" => "the bucket does not exist: run `nix-binary-cache provision`",
            "RequestTimeTooSkewed" => "the local clock is off by more than 15 minutes: fix NTP",
            _ => "",
        };
        Error::store(
            operation,
            self.endpoint.config().url.to_string(),
            e.status,
            e.code,
            e.message,
            hint,
        )
    }

    /// A [`Error::Store`] for a successful answer whose body cannot be used.
    fn unreadable(&self, operation: &str, resp: &Response, message: String) -> Error {
        Error::store(
            operation,
            self.endpoint.config().url.to_string(),
            resp.status.as_u16(),
            String::new(),
            message,
            "",
        )
    }

    /// HEAD bucket: `Ok(true)` if it exists and is visible, `Ok(false)` on 404.
    pub async fn bucket_exists(&self, bucket: &str) -> Result<bool> {
        let req = Request::new(Method::HEAD, self.path(bucket, None));
        Ok(self
            .send_found(&format!("HeadBucket {bucket}"), &req)
            .await?
            .is_some())
    }

    /// CreateBucket; `BucketAlreadyOwnedByYou` (a racing create) counts as success.
    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        let mut req = Request::new(Method::PUT, self.path(bucket, None));
        let region = &self.endpoint.config().region;
        if region != "us-east-1" {
            req = req.body(format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
            ));
        }
        let resp = self.send(&req).await?;
        if resp.status.is_success() {
            return Ok(());
        }
        let e = S3Error::from_response(&resp);
        if e.code == "BucketAlreadyOwnedByYou" {
            return Ok(());
        }
        Err(self.error(&format!("CreateBucket {bucket}"), &resp))
    }

    /// GET object: `Ok(None)` on 404 (`NoSuchKey`).
    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<Option<Bytes>> {
        Ok(self
            .get_object_with_etag(bucket, key)
            .await?
            .map(|(body, _)| body))
    }

    /// GET object with its `ETag` (quotes kept, as `If-Match` wants it):
    /// `Ok(None)` on 404. For read-modify-write with [`Self::put_object_if_match`].
    pub async fn get_object_with_etag(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(Bytes, String)>> {
        let req = Request::new(Method::GET, self.path(bucket, Some(key)));
        Ok(self
            .send_found(&format!("GetObject {bucket}/{key}"), &req)
            .await?
            .map(|resp| {
                let etag = resp.header("etag").unwrap_or("").to_string();
                (resp.body, etag)
            }))
    }

    /// PUT object only if it still has `etag` (`If-Match`): `Ok(false)` when
    /// it changed (or vanished) since it was read, so a read-modify-write
    /// never overwrites a concurrent writer's object. A store that does not
    /// implement conditional writes answers an error [`is_unsupported`]
    /// recognises.
    pub async fn put_object_if_match(
        &self,
        bucket: &str,
        key: &str,
        body: impl Into<Bytes>,
        content_type: &str,
        etag: &str,
    ) -> Result<bool> {
        let req = Request::new(Method::PUT, self.path(bucket, Some(key)))
            .header("content-type", content_type)
            .header("if-match", etag)
            .body(body);
        let resp = self.send(&req).await?;
        match resp.status {
            s if s.is_success() => Ok(true),
            // 409 ConditionalRequestConflict: AWS, for a racing write.
            StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT | StatusCode::NOT_FOUND => {
                Ok(false)
            }
            _ => Err(self.error(&format!("PutObject (If-Match) {bucket}/{key}"), &resp)),
        }
    }

    /// HEAD object: `Ok(None)` on 404.
    pub async fn head_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
        let req = Request::new(Method::HEAD, self.path(bucket, Some(key)));
        Ok(self
            .send_found(&format!("HeadObject {bucket}/{key}"), &req)
            .await?
            .map(|resp| ObjectMeta {
                size: resp
                    .header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                etag: resp
                    .header("etag")
                    .unwrap_or("")
                    .trim_matches('"')
                    .to_string(),
            }))
    }

    /// PUT object from memory (small objects: narinfo, nix-cache-info, roots).
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: impl Into<Bytes>,
        content_type: &str,
    ) -> Result<()> {
        let req = Request::new(Method::PUT, self.path(bucket, Some(key)))
            .header("content-type", content_type)
            .body(body);
        self.send_ok(&format!("PutObject {bucket}/{key}"), &req)
            .await
            .map(drop)
    }

    /// DELETE object (404 counts as success).
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<()> {
        let resp = self
            .send(&Request::new(Method::DELETE, self.path(bucket, Some(key))))
            .await?;
        if resp.status.is_success() || resp.status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(self.error(&format!("DeleteObject {bucket}/{key}"), &resp))
        }
    }

    /// GET bucket policy: `Ok(None)` when the bucket has none.
    pub async fn get_bucket_policy(&self, bucket: &str) -> Result<Option<serde_json::Value>> {
        let req = Request::new(Method::GET, self.path(bucket, None)).query("policy", "");
        let resp = self.send(&req).await?;
        if resp.status.is_success() {
            let text = resp.text();
            if text.trim().is_empty() {
                return Ok(None);
            }
            return serde_json::from_str(&text).map(Some).map_err(|e| {
                self.unreadable(
                    &format!("GetBucketPolicy {bucket}"),
                    &resp,
                    format!("the store returned a policy that is not JSON: {e}"),
                )
            });
        }
        let e = S3Error::from_response(&resp);
        if resp.status == StatusCode::NOT_FOUND
            && (e.code == "NoSuchBucketPolicy" || e.code.is_empty())
        {
            return Ok(None);
        }
        Err(self.error(&format!("GetBucketPolicy {bucket}"), &resp))
    }

    /// PUT bucket policy.
    pub async fn put_bucket_policy(&self, bucket: &str, policy: &serde_json::Value) -> Result<()> {
        let req = Request::new(Method::PUT, self.path(bucket, None))
            .query("policy", "")
            .header("content-type", "application/json")
            .body(policy.to_string());
        self.send_ok(&format!("PutBucketPolicy {bucket}"), &req)
            .await
            .map(drop)
    }

    /// DELETE bucket policy.
    pub async fn delete_bucket_policy(&self, bucket: &str) -> Result<()> {
        let req = Request::new(Method::DELETE, self.path(bucket, None)).query("policy", "");
        self.send_ok(&format!("DeleteBucketPolicy {bucket}"), &req)
            .await
            .map(drop)
    }

    /// The GetBucketLocation request for `bucket` (`GET /bucket?location`).
    ///
    /// A signed GET on the bucket is also the cheapest way to check an
    /// identity: unlike HEAD, its error answers carry a code
    /// (`InvalidAccessKeyId`, `SignatureDoesNotMatch`, `AccessDenied`).
    pub fn location_request(&self, bucket: &str) -> Request {
        Request::new(Method::GET, self.path(bucket, None)).query("location", "")
    }

    /// GetBucketLocation: the bucket's region (empty for `us-east-1`).
    pub async fn get_bucket_location(&self, bucket: &str) -> Result<String> {
        #[derive(Deserialize)]
        struct Location {
            #[serde(rename = "$text", default)]
            region: String,
        }
        let resp = self
            .send_ok(
                &format!("GetBucketLocation {bucket}"),
                &self.location_request(bucket),
            )
            .await?;
        let text = resp.text();
        // AWS answers `<LocationConstraint>region</LocationConstraint>`; some
        // stores wrap it in `<CreateBucketConfiguration>`.
        if let Ok(l) = quick_xml::de::from_str::<Location>(&text) {
            return Ok(l.region);
        }
        #[derive(Deserialize)]
        struct Wrapped {
            #[serde(rename = "LocationConstraint", default)]
            region: String,
        }
        Ok(quick_xml::de::from_str::<Wrapped>(&text)
            .map(|w| w.region)
            .unwrap_or_default())
    }

    /// GetBucketLifecycleConfiguration: the configuration XML, or `Ok(None)`
    /// when the bucket has none. A store without lifecycle support answers
    /// an error whose code [`is_unsupported`] recognises.
    pub async fn get_bucket_lifecycle(&self, bucket: &str) -> Result<Option<String>> {
        let req = Request::new(Method::GET, self.path(bucket, None)).query("lifecycle", "");
        let resp = self.send(&req).await?;
        if resp.status.is_success() {
            return Ok(Some(resp.text()));
        }
        if S3Error::from_response(&resp).code == "NoSuchLifecycleConfiguration" {
            return Ok(None);
        }
        Err(self.error(&format!("GetBucketLifecycleConfiguration {bucket}"), &resp))
    }

    /// PutBucketLifecycleConfiguration (replaces the whole configuration).
    /// Carries `Content-MD5`, which AWS and MinIO require for this call.
    pub async fn put_bucket_lifecycle(&self, bucket: &str, xml: &str) -> Result<()> {
        use base64::Engine as _;
        use md5::Digest as _;
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(xml));
        let req = Request::new(Method::PUT, self.path(bucket, None))
            .query("lifecycle", "")
            .header("content-type", "application/xml")
            .header("content-md5", md5)
            .body(xml.to_string());
        self.send_ok(&format!("PutBucketLifecycleConfiguration {bucket}"), &req)
            .await
            .map(drop)
    }

    /// ListObjectsV2, one page: keys under `prefix` after `token`.
    /// Returns the objects and the continuation token of the next page.
    pub async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<&str>,
        max_keys: u32,
    ) -> Result<(Vec<ListedObject>, Option<String>)> {
        self.list_objects(bucket, prefix, None, token, max_keys)
            .await
    }

    /// ListObjectsV2, one page of the objects at the top level of the
    /// bucket (delimiter `/`: `nar/…`, `roots/…` are not listed one by
    /// one), e.g. the narinfos of a cache.
    pub async fn list_top_level_page(
        &self,
        bucket: &str,
        token: Option<&str>,
        max_keys: u32,
    ) -> Result<(Vec<ListedObject>, Option<String>)> {
        self.list_objects(bucket, "", Some("/"), token, max_keys)
            .await
    }

    async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<&str>,
        max_keys: u32,
    ) -> Result<(Vec<ListedObject>, Option<String>)> {
        let mut req = Request::new(Method::GET, self.path(bucket, None))
            .query("list-type", "2")
            .query("max-keys", max_keys.to_string())
            .query("prefix", prefix);
        if let Some(d) = delimiter {
            req = req.query("delimiter", d);
        }
        if let Some(t) = token {
            req = req.query("continuation-token", t);
        }
        let resp = self
            .send_ok(&format!("ListObjectsV2 {bucket}/{prefix}"), &req)
            .await?;
        let store_error =
            |message: String| self.unreadable(&format!("ListObjectsV2 {bucket}"), &resp, message);
        let (objects, next) = parse_list_page(&resp.text())
            .map_err(|e| store_error(format!("unreadable listing: {e}")))?;
        // A store that hands back the token it was given would make every
        // caller page forever.
        if next.is_some() && next.as_deref() == token {
            return Err(store_error(
                "the store returned the same continuation token again; the listing cannot progress"
                    .into(),
            ));
        }
        Ok((objects, next))
    }

    /// Lists every key under `prefix` (all pages).
    pub async fn list_all(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let (mut page, next) = self
                .list_page(bucket, prefix, token.as_deref(), 1000)
                .await?;
            out.append(&mut page);
            match next {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// CreateMultipartUpload: returns the upload id.
    pub async fn create_multipart(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
    ) -> Result<String> {
        #[derive(Deserialize)]
        struct Init {
            #[serde(rename = "UploadId")]
            upload_id: String,
        }
        let req = Request::new(Method::POST, self.path(bucket, Some(key)))
            .query("uploads", "")
            .header("content-type", content_type);
        let operation = format!("CreateMultipartUpload {bucket}/{key}");
        let resp = self.send_ok(&operation, &req).await?;
        let init: Init = quick_xml::de::from_str(&resp.text())
            .map_err(|e| self.unreadable(&operation, &resp, format!("unreadable answer: {e}")))?;
        Ok(init.upload_id)
    }

    /// UploadPart: returns the part's ETag (quotes kept, as S3 wants it back).
    pub async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> Result<String> {
        let mut req = Request::new(Method::PUT, self.path(bucket, Some(key)))
            .query("partNumber", part_number.to_string())
            .query("uploadId", upload_id)
            .body(body);
        req.unsigned_payload = true;
        let resp = self
            .send_ok(&format!("UploadPart {bucket}/{key} #{part_number}"), &req)
            .await?;
        resp.header("etag")
            .map(str::to_string)
            .ok_or_else(|| Error::Other(format!("UploadPart {bucket}/{key}: no ETag in answer")))
    }

    /// CompleteMultipartUpload with the parts' ETags in order.
    pub async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        etags: &[String],
    ) -> Result<()> {
        let mut body = String::from("<CompleteMultipartUpload>");
        for (i, etag) in etags.iter().enumerate() {
            body.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                i + 1,
                xml_escape(etag)
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let req = Request::new(Method::POST, self.path(bucket, Some(key)))
            .query("uploadId", upload_id)
            .header("content-type", "application/xml")
            .body(body);
        let resp = self
            .send_ok(&format!("CompleteMultipartUpload {bucket}/{key}"), &req)
            .await?;
        // S3 may answer 200 with an <Error> body.
        if resp.text().contains("<Error>") {
            return Err(self.error(&format!("CompleteMultipartUpload {bucket}/{key}"), &resp));
        }
        Ok(())
    }

    /// AbortMultipartUpload (best effort on failure paths).
    pub async fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        let req =
            Request::new(Method::DELETE, self.path(bucket, Some(key))).query("uploadId", upload_id);
        self.send_ok(&format!("AbortMultipartUpload {bucket}/{key}"), &req)
            .await
            .map(drop)
    }
}

/// Parses one ListObjectsV2 answer: the objects and, when the listing is
/// truncated, the continuation token of the next page.
pub fn parse_list_page(
    xml: &str,
) -> std::result::Result<(Vec<ListedObject>, Option<String>), String> {
    #[derive(Deserialize)]
    struct ListXml {
        #[serde(rename = "Contents", default)]
        contents: Vec<ListedObject>,
        #[serde(rename = "IsTruncated", default)]
        truncated: bool,
        #[serde(rename = "NextContinuationToken", default)]
        next: Option<String>,
    }
    let parsed: ListXml = quick_xml::de::from_str(xml).map_err(|e| e.to_string())?;
    let next = if parsed.truncated { parsed.next } else { None };
    Ok((parsed.contents, next))
}

/// True for an error saying the store does not implement an operation
/// (HTTP 501, `NotImplemented`, or a 405 `MethodNotAllowed` for the resource).
pub fn is_unsupported(err: &Error) -> bool {
    match err {
        Error::Store { status, code, .. } => {
            *status == 501
                || matches!(
                    code.as_deref(),
                    Some("NotImplemented" | "MethodNotAllowed" | "UnsupportedOperation")
                )
        }
        _ => false,
    }
}

/// Escapes text for an XML element.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Checks an S3 bucket name (3-63 characters of `a-z 0-9 . -`, starting and
/// ending with a letter or digit, not an IP address); the error says why.
pub fn validate_bucket_name(name: &str) -> std::result::Result<(), String> {
    if !(3..=63).contains(&name.len()) {
        return Err(format!("`{name}` must be 3 to 63 characters long"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err(format!(
            "`{name}` may only hold lowercase letters, digits, dots and hyphens"
        ));
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[name.len() - 1];
    if !(first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric()) {
        return Err(format!(
            "`{name}` must start and end with a letter or digit"
        ));
    }
    if name.contains("..") {
        return Err(format!("`{name}` must not contain two dots in a row"));
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(format!("`{name}` must not look like an IP address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        assert!(validate_bucket_name("nix-cache").is_ok());
        for bad in ["ab", "Nix", "-a-b", "a..b", "192.168.1.1", "a_b"] {
            assert!(validate_bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unsupported_answers() {
        let store = |status, code: Option<&str>| Error::Store {
            operation: "GetBucketLifecycleConfiguration b".into(),
            endpoint: "http://127.0.0.1:1".into(),
            status,
            code: code.map(str::to_string),
            message: String::new(),
        };
        assert!(is_unsupported(&store(501, None)));
        assert!(is_unsupported(&store(400, Some("NotImplemented"))));
        assert!(!is_unsupported(&store(403, Some("AccessDenied"))));
        assert!(!is_unsupported(&store(500, None)));
    }

    #[test]
    fn parses_error_xml() {
        let resp = Response {
            status: StatusCode::FORBIDDEN,
            headers: Default::default(),
            body: Bytes::from_static(
                b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>no</Message></Error>",
            ),
        };
        let e = S3Error::from_response(&resp);
        assert_eq!(
            (e.status, e.code.as_str(), e.message.as_str()),
            (403, "AccessDenied", "no")
        );
    }
}
