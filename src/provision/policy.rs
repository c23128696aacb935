//! Policy documents: the writer policy and the anonymous-read bucket
//! statement we want, and a semantic comparison with what a store returns.
//!
//! Stores do not give back the bytes they were given: they reorder actions,
//! turn a one-element list into a string (`"Resource": "arn:..."`), spell the
//! anonymous principal `"*"`, `{"AWS": "*"}` or `{"AWS": ["*"]}`, drop or
//! keep `Sid`s. Comparing bytes would rewrite the policy on every run, so a
//! policy is compared as the *set of permissions it grants*: every statement
//! is flattened into atoms (effect, principal, action, resource, condition),
//! with action names lower-cased (IAM treats them case-insensitively) and
//! principals normalised. Two documents are the same when their atom sets
//! are equal, however the statements are split, ordered or spelled.

use std::collections::BTreeSet;

use serde_json::{Value, json};

/// The policy language version we write.
pub const POLICY_VERSION: &str = "2012-10-17";

/// What every writer needs on every backend. No `Delete*`: signatures, not
/// the policy, protect clients from a compromised builder, but a writer that
/// cannot delete cannot empty the cache either.
pub const BASE_WRITER_ACTIONS: &[&str] = &[
    "s3:GetObject",
    "s3:PutObject",
    "s3:ListBucket",
    "s3:GetBucketLocation",
    "s3:AbortMultipartUpload",
];

/// Listing of multipart uploads, for resuming and cleaning up large uploads.
/// Only for backends that accept them in a policy they can later update
/// (MinIO does; SeaweedFS's `CreatePolicyVersion` rejects them).
pub const MULTIPART_LISTING_ACTIONS: &[&str] = &[
    "s3:ListBucketMultipartUploads",
    "s3:ListMultipartUploadParts",
];

/// `Sid` of our anonymous-read statement in the bucket policy.
pub const PUBLIC_READ_SID: &str = "NixBinaryCachePublicRead";

/// `Sid` of the statement in the writer policy.
pub const WRITER_SID: &str = "NixBinaryCacheWrite";

/// The writer policy for `bucket` with `actions` on the bucket and its objects.
pub fn writer_policy(bucket: &str, actions: &[&str]) -> Value {
    json!({
        "Version": POLICY_VERSION,
        "Statement": [{
            "Sid": WRITER_SID,
            "Effect": "Allow",
            "Action": actions,
            "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")],
        }]
    })
}

/// The statement that makes the cache public: anonymous `s3:GetObject` on
/// the bucket's objects, and nothing else (a bucket-policy Allow skips the
/// identity check on some stores, so it must not grant more).
pub fn public_read_statement(bucket: &str) -> Value {
    json!({
        "Sid": PUBLIC_READ_SID,
        "Effect": "Allow",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": format!("arn:aws:s3:::{bucket}/*"),
    })
}

/// One permission: (effect, principal, action, resource, condition), each
/// normalised; `Not*` fields are kept apart by a prefix.
type Atom = (String, String, String, String, String);

/// The atoms of one statement.
fn statement_atoms(stmt: &Value) -> BTreeSet<Atom> {
    let effect = stmt
        .get("Effect")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    let principals = match (stmt.get("Principal"), stmt.get("NotPrincipal")) {
        (Some(p), _) => principals(p, ""),
        (None, Some(p)) => principals(p, "not:"),
        (None, None) => vec!["none".to_string()],
    };
    let actions: Vec<String> = field(stmt, "Action", "NotAction")
        .into_iter()
        .map(|a| a.to_ascii_lowercase())
        .collect();
    let resources = field(stmt, "Resource", "NotResource");
    let condition = stmt
        .get("Condition")
        .map(Value::to_string)
        .unwrap_or_default();
    let mut out = BTreeSet::new();
    for p in &principals {
        for a in &actions {
            for r in &resources {
                out.insert((
                    effect.clone(),
                    p.clone(),
                    a.clone(),
                    r.clone(),
                    condition.clone(),
                ));
            }
        }
    }
    out
}

/// The values of `name` (or of `not_name`, prefixed `not:`); a placeholder
/// when both are missing so that the statement still has atoms.
fn field(stmt: &Value, name: &str, not_name: &str) -> Vec<String> {
    match (stmt.get(name), stmt.get(not_name)) {
        (Some(v), _) => strings(v, ""),
        (None, Some(v)) => strings(v, "not:"),
        (None, None) => vec!["-".to_string()],
    }
}

/// A string or a list of strings; anything else as its JSON text.
fn strings(v: &Value, prefix: &str) -> Vec<String> {
    match v {
        Value::String(s) => vec![format!("{prefix}{s}")],
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => format!("{prefix}{s}"),
                other => format!("{prefix}{other}"),
            })
            .collect(),
        other => vec![format!("{prefix}{other}")],
    }
}

/// Principals as `kind:value`; `"*"` is the same as `{"AWS": "*"}`.
fn principals(p: &Value, prefix: &str) -> Vec<String> {
    match p {
        Value::String(s) if s == "*" => vec![format!("{prefix}AWS:*")],
        Value::Object(map) => map
            .iter()
            .flat_map(|(kind, v)| {
                strings(v, "")
                    .into_iter()
                    .map(move |s| format!("{prefix}{kind}:{s}"))
            })
            .collect(),
        other => strings(other, &format!("{prefix}AWS:")),
    }
}

/// The statements of a policy document (a single statement object counts).
pub fn statements(policy: &Value) -> Vec<Value> {
    match policy.get("Statement") {
        Some(Value::Array(s)) => s.clone(),
        Some(s @ Value::Object(_)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Every atom a policy document grants or denies.
fn policy_atoms(policy: &Value) -> BTreeSet<Atom> {
    statements(policy)
        .iter()
        .flat_map(statement_atoms)
        .collect()
}

/// True when two policy documents grant and deny exactly the same.
pub fn same_policy(a: &Value, b: &Value) -> bool {
    policy_atoms(a) == policy_atoms(b)
}

/// What to do with a bucket policy.
#[derive(Debug, Clone, PartialEq)]
pub enum BucketPolicyChange {
    /// It already is as wanted.
    Unchanged,
    /// Write this document (statements of others kept).
    Put(Value),
    /// Remove the policy: our statement was its only one.
    Delete,
}

/// Plans the bucket policy: with `public`, our anonymous-read statement
/// must be in force; without, only our statement is removed. Statements
/// that are not ours are always kept as they are.
///
/// A statement is ours when it carries our `Sid`, or grants exactly what
/// ours grants. A statement with our `Sid` that grants something else was
/// edited by hand: it is replaced.
pub fn plan_bucket_policy(
    current: Option<&Value>,
    bucket: &str,
    public: bool,
) -> BucketPolicyChange {
    let ours = public_read_statement(bucket);
    let our_atoms = statement_atoms(&ours);
    let current_statements = current.map(statements).unwrap_or_default();
    let is_ours = |s: &Value| {
        s.get("Sid").and_then(Value::as_str) == Some(PUBLIC_READ_SID)
            || statement_atoms(s) == our_atoms
    };
    let edited_ours = current_statements.iter().any(|s| {
        s.get("Sid").and_then(Value::as_str) == Some(PUBLIC_READ_SID)
            && statement_atoms(s) != our_atoms
    });
    let kept: Vec<Value> = current_statements
        .iter()
        .filter(|s| !is_ours(s))
        .cloned()
        .collect();
    let document = |statements: Vec<Value>| {
        let mut doc = current.cloned().unwrap_or_else(|| json!({}));
        if !doc.is_object() {
            doc = json!({});
        }
        if doc.get("Version").is_none() {
            doc["Version"] = json!(POLICY_VERSION);
        }
        doc["Statement"] = Value::Array(statements);
        doc
    };
    if public {
        let granted: BTreeSet<Atom> = current_statements
            .iter()
            .filter(|s| {
                !(s.get("Sid").and_then(Value::as_str) == Some(PUBLIC_READ_SID) && edited_ours)
            })
            .flat_map(statement_atoms)
            .collect();
        if !edited_ours && our_atoms.is_subset(&granted) {
            return BucketPolicyChange::Unchanged;
        }
        let mut statements = kept;
        statements.push(ours);
        BucketPolicyChange::Put(document(statements))
    } else if kept.len() == current_statements.len() {
        BucketPolicyChange::Unchanged
    } else if kept.is_empty() {
        BucketPolicyChange::Delete
    } else {
        BucketPolicyChange::Put(document(kept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelling_does_not_matter() {
        let ours = json!({"Version": "2012-10-17", "Statement": [public_read_statement("b")]});
        for principal in [json!("*"), json!({"AWS": "*"}), json!({"AWS": ["*"]})] {
            let theirs = json!({"Statement": [{
                "Effect": "Allow", "Principal": principal,
                "Action": ["S3:GetObject"], "Resource": ["arn:aws:s3:::b/*"]
            }]});
            assert!(same_policy(&ours, &theirs), "{theirs}");
        }
        let w1 = writer_policy("b", BASE_WRITER_ACTIONS);
        let mut reversed: Vec<&str> = BASE_WRITER_ACTIONS.to_vec();
        reversed.reverse();
        // Split into two statements, actions reordered, no Sid.
        let w2 = json!({"Statement": [
            {"Effect": "Allow", "Action": reversed, "Resource": "arn:aws:s3:::b"},
            {"Effect": "Allow", "Action": BASE_WRITER_ACTIONS, "Resource": ["arn:aws:s3:::b/*"]},
        ]});
        assert!(same_policy(&w1, &w2));
        assert!(!same_policy(
            &w1,
            &writer_policy("b", &BASE_WRITER_ACTIONS[..4])
        ));
        assert!(!same_policy(
            &w1,
            &writer_policy("other", BASE_WRITER_ACTIONS)
        ));
        let with_condition = json!({"Statement": [{
            "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::b/*", "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}
        }]});
        assert!(!same_policy(&ours, &with_condition));
        let deny = json!({"Statement": [{
            "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"
        }]});
        assert!(!same_policy(&ours, &deny));
    }

    #[test]
    fn bucket_policy_plans() {
        use BucketPolicyChange::*;
        let foreign = json!({"Sid": "Other", "Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::1:user/x"]},
                             "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b"});
        // Nothing yet: public adds ours; private leaves it alone.
        let Put(doc) = plan_bucket_policy(None, "b", true) else {
            panic!()
        };
        assert_eq!(statements(&doc), vec![public_read_statement("b")]);
        assert_eq!(plan_bucket_policy(None, "b", false), Unchanged);

        // Ours as a store returns it (no Sid, list spelled as a string): unchanged.
        let stored = json!({"Version": "2012-10-17", "Statement": [foreign.clone(), {
            "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["s3:GetObject"],
            "Resource": "arn:aws:s3:::b/*"}]});
        assert_eq!(plan_bucket_policy(Some(&stored), "b", true), Unchanged);
        // Private: only ours goes, the foreign statement stays.
        let Put(doc) = plan_bucket_policy(Some(&stored), "b", false) else {
            panic!()
        };
        assert_eq!(statements(&doc), vec![foreign.clone()]);
        // Ours alone, private: the whole policy goes.
        let alone = json!({"Statement": [public_read_statement("b")]});
        assert_eq!(plan_bucket_policy(Some(&alone), "b", false), Delete);

        // Foreign only, public: ours is added, the foreign one kept.
        let only_foreign = json!({"Version": "2012-10-17", "Statement": [foreign.clone()]});
        let Put(doc) = plan_bucket_policy(Some(&only_foreign), "b", true) else {
            panic!()
        };
        assert_eq!(
            statements(&doc),
            vec![foreign.clone(), public_read_statement("b")]
        );

        // Ours edited by hand (now grants listing too): replaced.
        let edited = json!({"Statement": [{"Sid": PUBLIC_READ_SID, "Effect": "Allow", "Principal": "*",
            "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": ["arn:aws:s3:::b/*", "arn:aws:s3:::b"]}]});
        let Put(doc) = plan_bucket_policy(Some(&edited), "b", true) else {
            panic!()
        };
        assert_eq!(statements(&doc), vec![public_read_statement("b")]);
    }
}
