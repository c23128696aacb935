//! A client for the AWS IAM API (the identity plane of the `iam` backend:
//! AWS itself, SeaweedFS 4.x on its S3 port, Ceph RGW).
//!
//! The protocol is AWS "query": a form-encoded POST of `Action=...&
//! Version=2010-05-08&...` signed with SigV4 for the service `iam`, answered
//! with XML. Every call is a POST, so the read calls (`Get*`, `List*`) are
//! marked [`Request::read_only`]: the request counters, and with them the
//! "a converged run only reads" promise, see them as the reads they are.
//!
//! Stores differ in small ways this client absorbs:
//! - ARNs: AWS puts the account id in them, SeaweedFS leaves it empty
//!   (`arn:aws:iam:::policy/NAME`). Callers always take ARNs from answers.
//! - Policy documents: AWS returns them percent-encoded (RFC 3986),
//!   SeaweedFS as plain JSON (XML-escaped); [`decode_policy_document`]
//!   accepts both.
//! - A user that does not exist: AWS answers `NoSuchEntity` to
//!   `ListAccessKeys`, SeaweedFS an empty list. Both read as "no keys".
//! - `CreatePolicyVersion`: AWS keeps up to five versions, SeaweedFS
//!   replaces the one it has.

use http::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::credentials::Credentials;
use crate::error::{Error, Result};
use crate::http::{Endpoint, Request, Response, aws_encode};

/// The IAM API version every call names.
pub const API_VERSION: &str = "2010-05-08";

/// A user (`GetUser`, `CreateUser`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct User {
    /// The user's name.
    #[serde(rename = "UserName")]
    pub name: String,
    /// The user's ARN.
    #[serde(rename = "Arn", default)]
    pub arn: String,
}

/// An access key's metadata (`ListAccessKeys`); the secret is never listed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccessKeyMeta {
    /// The access key id.
    #[serde(rename = "AccessKeyId")]
    pub access_key_id: String,
    /// `Active` or `Inactive`.
    #[serde(rename = "Status", default)]
    pub status: String,
}

impl AccessKeyMeta {
    /// True when the key may sign requests.
    pub fn is_active(&self) -> bool {
        self.status.is_empty() || self.status.eq_ignore_ascii_case("Active")
    }
}

/// A managed policy (`GetPolicy`, `CreatePolicy`, `ListPolicies`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Policy {
    /// The policy's name.
    #[serde(rename = "PolicyName")]
    pub name: String,
    /// The policy's ARN, as the store spells it.
    #[serde(rename = "Arn")]
    pub arn: String,
    /// The version that is in force (`v1`, ...).
    #[serde(rename = "DefaultVersionId", default)]
    pub default_version_id: String,
}

/// A policy attached to a user (`ListAttachedUserPolicies`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AttachedPolicy {
    /// The policy's name.
    #[serde(rename = "PolicyName", default)]
    pub name: String,
    /// The policy's ARN.
    #[serde(rename = "PolicyArn")]
    pub arn: String,
}

/// One version of a managed policy (`ListPolicyVersions`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PolicyVersionMeta {
    /// `v1`, `v2`, ...
    #[serde(rename = "VersionId")]
    pub version_id: String,
    /// True for the version in force.
    #[serde(rename = "IsDefaultVersion", default)]
    pub is_default: bool,
}

/// Children of a list element: `<Users><member>...</member></Users>`.
#[derive(Debug, Deserialize)]
struct Members<T> {
    #[serde(rename = "member", default = "Vec::new")]
    member: Vec<T>,
}

impl<T> Default for Members<T> {
    fn default() -> Self {
        Members { member: Vec::new() }
    }
}

/// One page of a list action: the list element (its name depends on the
/// action), and the paging fields.
#[derive(Debug, Deserialize)]
struct Page<T> {
    #[serde(
        rename = "AccessKeyMetadata",
        alias = "AttachedPolicies",
        alias = "Policies",
        alias = "Versions",
        default = "Members::default"
    )]
    items: Members<T>,
    #[serde(rename = "IsTruncated", default)]
    truncated: bool,
    #[serde(rename = "Marker", default)]
    marker: Option<String>,
}

/// A list of a user that does not exist is empty (AWS answers
/// `NoSuchEntity`, SeaweedFS an empty list).
fn no_entity_is_empty<T>(r: Result<Vec<T>>) -> Result<Vec<T>> {
    match r {
        Err(e) if e.store_code() == Some("NoSuchEntity") => Ok(Vec::new()),
        other => other,
    }
}

/// An IAM client signing as one (admin) identity.
#[derive(Debug, Clone)]
pub struct IamClient {
    /// The IAM endpoint (request counters, retries).
    pub endpoint: Endpoint,
    creds: Credentials,
}

impl IamClient {
    /// A client for `endpoint` signing with `creds`.
    pub fn new(endpoint: Endpoint, creds: Credentials) -> Self {
        IamClient { endpoint, creds }
    }

    /// Sends one action; a non-2xx answer becomes an [`Error::Store`] with
    /// the IAM error code and a hint.
    async fn call(&self, action: &str, params: &[(&str, &str)]) -> Result<Response> {
        let mut body = format!("Action={action}&Version={API_VERSION}");
        for (k, v) in params {
            body.push('&');
            body.push_str(&aws_encode(k));
            body.push('=');
            body.push_str(&aws_encode(v));
        }
        let mut req = Request::new(Method::POST, "/")
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(body);
        if is_read_action(action) {
            req = req.read_only();
        }
        let resp = self.endpoint.send(&req, Some(&self.creds), "iam").await?;
        if resp.status.is_success() {
            Ok(resp)
        } else {
            Err(self.error(action, &resp))
        }
    }

    /// Sends `action` and parses the `<{action}Result>` element of the answer.
    async fn call_parse<T: DeserializeOwned>(
        &self,
        action: &str,
        params: &[(&str, &str)],
    ) -> Result<T> {
        let resp = self.call(action, params).await?;
        parse_result(&resp.text()).map_err(|e| self.unreadable(action, &resp, &e))
    }

    fn unreadable(&self, action: &str, resp: &Response, why: &str) -> Error {
        Error::Store {
            operation: format!("IAM {action}"),
            endpoint: self.endpoint.config().url.to_string(),
            status: resp.status.as_u16(),
            code: None,
            message: format!(
                "unreadable answer ({why}); does this endpoint serve the IAM API? \
                 Set --iam-endpoint (iamEndpoint), or use the `minio` or `s3` backend"
            ),
        }
    }

    /// An [`Error::Store`] for an IAM error answer, with a hint for common codes.
    pub fn error(&self, action: &str, resp: &Response) -> Error {
        let (code, message) = parse_error(&resp.text());
        let hint = match code.as_str() {
            "InvalidClientTokenId" | "InvalidAccessKeyId" => {
                "the admin access key id is unknown to the store: check the admin credentials file"
            }
            "SignatureDoesNotMatch" => {
                "the admin secret is wrong (or the region differs): check the admin credentials file"
            }
            "AccessDenied" | "AccessDeniedException" => {
                "the admin identity may not manage IAM users and policies: give it IAM \
                 permissions or use the store's root credentials"
            }
            "MalformedPolicyDocument" => "the store refused the policy document",
            "LimitExceeded" => "an IAM limit of the store was reached",
            "" if !resp.text().contains("<Error") => {
                "the answer is not an IAM error; does this endpoint serve the IAM API? \
                 Set --iam-endpoint (iamEndpoint), or use the `minio` or `s3` backend"
            }
            _ => "",
        };
        let mut message = message;
        if message.contains("IAM write operations are disabled") {
            message.push_str("; the store's IAM API is read-only (SeaweedFS: start it with -s3.iam.readOnly=false)");
        }
        Error::store(
            format!("IAM {action}"),
            self.endpoint.config().url.to_string(),
            resp.status.as_u16(),
            code,
            message,
            hint,
        )
    }

    // ---- reads -----------------------------------------------------------

    /// GetUser: `Ok(None)` when the user does not exist.
    pub async fn get_user(&self, name: &str) -> Result<Option<User>> {
        #[derive(Deserialize)]
        struct R {
            #[serde(rename = "User")]
            user: User,
        }
        match self.call_parse::<R>("GetUser", &[("UserName", name)]).await {
            Ok(r) => Ok(Some(r.user)),
            Err(e) if e.store_code() == Some("NoSuchEntity") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every page of a list action (`Marker` / `IsTruncated` paging).
    async fn list_pages<T: DeserializeOwned>(
        &self,
        action: &str,
        params: &[(&str, &str)],
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut all = params.to_vec();
            if let Some(m) = &marker {
                all.push(("Marker", m));
            }
            let page: Page<T> = self.call_parse(action, &all).await?;
            out.extend(page.items.member);
            match (page.truncated, page.marker) {
                // The same marker again would page forever.
                (true, Some(m)) if marker.as_deref() == Some(m.as_str()) => {
                    return Err(Error::Other(format!(
                        "{action}: the IAM endpoint returned the same Marker again; \
                         the listing cannot progress"
                    )));
                }
                (true, Some(m)) => marker = Some(m),
                _ => return Ok(out),
            }
        }
    }

    /// ListAccessKeys of a user (all pages); empty when the user does not exist.
    pub async fn list_access_keys(&self, user: &str) -> Result<Vec<AccessKeyMeta>> {
        no_entity_is_empty(
            self.list_pages("ListAccessKeys", &[("UserName", user)])
                .await,
        )
    }

    /// ListAttachedUserPolicies (all pages); empty when the user does not exist.
    pub async fn list_attached_user_policies(&self, user: &str) -> Result<Vec<AttachedPolicy>> {
        no_entity_is_empty(
            self.list_pages("ListAttachedUserPolicies", &[("UserName", user)])
                .await,
        )
    }

    /// ListPolicies with `Scope=Local` (the account's own policies, all pages).
    pub async fn list_policies(&self) -> Result<Vec<Policy>> {
        self.list_pages("ListPolicies", &[("Scope", "Local")]).await
    }

    /// GetPolicy: `Ok(None)` when no policy has this ARN.
    pub async fn get_policy(&self, arn: &str) -> Result<Option<Policy>> {
        #[derive(Deserialize)]
        struct R {
            #[serde(rename = "Policy")]
            policy: Policy,
        }
        match self
            .call_parse::<R>("GetPolicy", &[("PolicyArn", arn)])
            .await
        {
            Ok(r) => Ok(Some(r.policy)),
            Err(e) if e.store_code() == Some("NoSuchEntity") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// GetPolicyVersion: the version's policy document, decoded.
    pub async fn get_policy_version(
        &self,
        arn: &str,
        version_id: &str,
    ) -> Result<serde_json::Value> {
        #[derive(Deserialize)]
        struct Version {
            #[serde(rename = "Document", default)]
            document: String,
        }
        #[derive(Deserialize)]
        struct R {
            #[serde(rename = "PolicyVersion")]
            version: Version,
        }
        let action = "GetPolicyVersion";
        let resp = self
            .call(action, &[("PolicyArn", arn), ("VersionId", version_id)])
            .await?;
        let r: R = parse_result(&resp.text()).map_err(|e| self.unreadable(action, &resp, &e))?;
        decode_policy_document(&r.version.document)
            .map_err(|e| self.unreadable(action, &resp, &format!("policy document of {arn}: {e}")))
    }

    /// ListPolicyVersions of a policy.
    pub async fn list_policy_versions(&self, arn: &str) -> Result<Vec<PolicyVersionMeta>> {
        self.list_pages("ListPolicyVersions", &[("PolicyArn", arn)])
            .await
    }

    // ---- writes ----------------------------------------------------------

    /// CreateUser (`EntityAlreadyExists` is returned as an error).
    pub async fn create_user(&self, name: &str) -> Result<User> {
        #[derive(Deserialize)]
        struct R {
            #[serde(rename = "User")]
            user: User,
        }
        Ok(self
            .call_parse::<R>("CreateUser", &[("UserName", name)])
            .await?
            .user)
    }

    /// CreateAccessKey: the new key pair (the only time its secret is seen).
    pub async fn create_access_key(&self, user: &str) -> Result<Credentials> {
        #[derive(Deserialize)]
        struct Key {
            #[serde(rename = "AccessKeyId")]
            id: String,
            #[serde(rename = "SecretAccessKey")]
            secret: String,
        }
        #[derive(Deserialize)]
        struct R {
            #[serde(rename = "AccessKey")]
            key: Key,
        }
        let r: R = self
            .call_parse("CreateAccessKey", &[("UserName", user)])
            .await?;
        Ok(Credentials::new(r.key.id, r.key.secret))
    }

    /// DeleteAccessKey.
    pub async fn delete_access_key(&self, user: &str, access_key_id: &str) -> Result<()> {
        self.call(
            "DeleteAccessKey",
            &[("UserName", user), ("AccessKeyId", access_key_id)],
        )
        .await
        .map(drop)
    }

    /// CreatePolicy: the new policy (its ARN as the store spells it).
    pub async fn create_policy(&self, name: &str, document: &serde_json::Value) -> Result<Policy> {
        #[derive(Deserialize)]
        struct R {
            #[serde(rename = "Policy")]
            policy: Policy,
        }
        let doc = document.to_string();
        Ok(self
            .call_parse::<R>(
                "CreatePolicy",
                &[("PolicyName", name), ("PolicyDocument", &doc)],
            )
            .await?
            .policy)
    }

    /// CreatePolicyVersion, made the default version. `LimitExceeded` (AWS
    /// keeps five versions) is returned as an error for the caller to prune
    /// with [`IamClient::delete_policy_version`].
    pub async fn create_policy_version(
        &self,
        arn: &str,
        document: &serde_json::Value,
    ) -> Result<()> {
        let doc = document.to_string();
        self.call(
            "CreatePolicyVersion",
            &[
                ("PolicyArn", arn),
                ("PolicyDocument", &doc),
                ("SetAsDefault", "true"),
            ],
        )
        .await
        .map(drop)
    }

    /// DeletePolicyVersion (never the default version: the store refuses).
    pub async fn delete_policy_version(&self, arn: &str, version_id: &str) -> Result<()> {
        self.call(
            "DeletePolicyVersion",
            &[("PolicyArn", arn), ("VersionId", version_id)],
        )
        .await
        .map(drop)
    }

    /// AttachUserPolicy (attaching twice is accepted by the stores we know).
    pub async fn attach_user_policy(&self, user: &str, arn: &str) -> Result<()> {
        self.call(
            "AttachUserPolicy",
            &[("UserName", user), ("PolicyArn", arn)],
        )
        .await
        .map(drop)
    }

    /// DetachUserPolicy.
    pub async fn detach_user_policy(&self, user: &str, arn: &str) -> Result<()> {
        self.call(
            "DetachUserPolicy",
            &[("UserName", user), ("PolicyArn", arn)],
        )
        .await
        .map(drop)
    }
}

/// True for IAM actions that only read (`Get*`, `List*`).
pub fn is_read_action(action: &str) -> bool {
    action.starts_with("Get") || action.starts_with("List")
}

/// Parses the `<XResult>` child of an IAM answer `<XResponse>`.
pub(crate) fn parse_result<T: DeserializeOwned>(xml: &str) -> std::result::Result<T, String> {
    // The result element's name depends on the action: take the first
    // element whose name ends in `Result`.
    let result = find_result_element(xml).ok_or("no <...Result> element")?;
    quick_xml::de::from_str::<T>(result).map_err(|e| e.to_string())
}

/// The text of the first `<...Result>` element (start tag to end tag).
fn find_result_element(xml: &str) -> Option<&str> {
    let mut search = 0;
    while let Some(off) = xml[search..].find('<') {
        let open = search + off;
        let rest = &xml[open + 1..];
        let name_len = rest.find(['>', ' ', '/'])?;
        let name = &rest[..name_len];
        if name.ends_with("Result") && !name.starts_with('/') {
            let close = format!("</{name}>");
            let end = xml[open..].find(&close)? + open + close.len();
            return Some(&xml[open..end]);
        }
        search = open + 1;
    }
    None
}

/// Parses an IAM `<ErrorResponse><Error><Code>..` answer into code and message.
pub(crate) fn parse_error(xml: &str) -> (String, String) {
    #[derive(Deserialize, Default)]
    struct ErrorXml {
        #[serde(rename = "Code", default)]
        code: String,
        #[serde(rename = "Message", default)]
        message: String,
    }
    #[derive(Deserialize)]
    struct ErrorResponse {
        #[serde(rename = "Error", default)]
        error: ErrorXml,
    }
    if let Ok(r) = quick_xml::de::from_str::<ErrorResponse>(xml)
        && !r.error.code.is_empty()
    {
        return (r.error.code, r.error.message);
    }
    // S3-style `<Error>` at the top (a store answering IAM calls as S3).
    quick_xml::de::from_str::<ErrorXml>(xml)
        .map(|e| (e.code, e.message))
        .unwrap_or_default()
}

/// Decodes a policy document from `GetPolicyVersion`: AWS percent-encodes
/// it (RFC 3986), SeaweedFS returns the JSON as is.
pub fn decode_policy_document(doc: &str) -> std::result::Result<serde_json::Value, String> {
    let trimmed = doc.trim();
    if let Ok(v) = serde_json::from_str(trimmed) {
        return Ok(v);
    }
    let decoded = percent_encoding::percent_decode_str(trimmed)
        .decode_utf8()
        .map_err(|e| format!("percent-encoded document is not UTF-8: {e}"))?;
    serde_json::from_str(&decoded).map_err(|e| format!("not JSON, plain or percent-encoded: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST_KEYS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListAccessKeysResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><ListAccessKeysResult><AccessKeyMetadata><member><AccessKeyId>AKIA1</AccessKeyId><Status>Active</Status><UserName>w1</UserName></member><member><AccessKeyId>AKIA2</AccessKeyId><Status>Inactive</Status><UserName>w1</UserName></member></AccessKeyMetadata><IsTruncated>false</IsTruncated></ListAccessKeysResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></ListAccessKeysResponse>"#;

    #[test]
    fn parses_lists_and_empty_lists() {
        let r: Page<AccessKeyMeta> = parse_result(LIST_KEYS).unwrap();
        assert_eq!(r.items.member.len(), 2);
        assert!(r.items.member[0].is_active());
        assert!(!r.items.member[1].is_active());
        assert!(!r.truncated);
        let empty = "<ListAccessKeysResponse><ListAccessKeysResult><AccessKeyMetadata></AccessKeyMetadata><IsTruncated>false</IsTruncated></ListAccessKeysResult></ListAccessKeysResponse>";
        let r: Page<AccessKeyMeta> = parse_result(empty).unwrap();
        assert!(r.items.member.is_empty());
        let policies = "<ListPoliciesResponse><ListPoliciesResult><Policies><member><Arn>arn:aws:iam:::policy/p</Arn><DefaultVersionId>v1</DefaultVersionId><PolicyName>p</PolicyName></member></Policies><IsTruncated>true</IsTruncated><Marker>m1</Marker></ListPoliciesResult></ListPoliciesResponse>";
        let r: Page<Policy> = parse_result(policies).unwrap();
        assert_eq!(r.items.member[0].arn, "arn:aws:iam:::policy/p");
        assert_eq!((r.truncated, r.marker.as_deref()), (true, Some("m1")));
    }

    #[test]
    fn parses_errors() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Code>NoSuchEntity</Code><Message>the user with name x cannot be found.</Message><Type>Sender</Type></Error><RequestId>1</RequestId></ErrorResponse>"#;
        assert_eq!(
            parse_error(xml),
            (
                "NoSuchEntity".into(),
                "the user with name x cannot be found.".into()
            )
        );
        let s3 = "<Error><Code>AccessDenied</Code><Message>no</Message></Error>";
        assert_eq!(parse_error(s3).0, "AccessDenied");
    }

    #[test]
    fn decodes_plain_and_percent_encoded_documents() {
        let plain = r#"{"Version":"2012-10-17","Statement":[]}"#;
        let aws = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        assert_eq!(
            decode_policy_document(plain).unwrap(),
            decode_policy_document(aws).unwrap()
        );
        // A `+` in a percent-encoded document is a plus, not a space.
        let with_plus = "%7B%22a%22%3A%22x+y%22%7D";
        assert_eq!(decode_policy_document(with_plus).unwrap()["a"], "x+y");
        assert!(decode_policy_document("garbage%").is_err());
    }

    #[test]
    fn read_actions() {
        for a in ["GetUser", "ListAccessKeys", "GetPolicyVersion"] {
            assert!(is_read_action(a));
        }
        for a in ["CreateUser", "AttachUserPolicy", "DeleteAccessKey"] {
            assert!(!is_read_action(a));
        }
    }
}
