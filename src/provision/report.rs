//! What a provision run did: one [`Outcome`] per resource, the number of
//! requests sent, and whether the store has converged. Printed as one line
//! per resource, or as one JSON document.

use serde::{Serialize, Serializer};

/// What happened to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It was missing and has been created.
    Created,
    /// It differed and has been changed.
    Updated,
    /// It already was as wanted; nothing was sent but reads.
    Unchanged,
    /// `--dry-run`: it is missing.
    WouldCreate,
    /// `--dry-run`: it differs.
    WouldUpdate,
    /// The store does not implement it (reported, not a failure).
    Unsupported,
}

impl Status {
    /// `Created`, or `WouldCreate` under `--dry-run`.
    pub fn create(dry_run: bool) -> Status {
        if dry_run {
            Status::WouldCreate
        } else {
            Status::Created
        }
    }

    /// `Updated`, or `WouldUpdate` under `--dry-run`.
    pub fn update(dry_run: bool) -> Status {
        if dry_run {
            Status::WouldUpdate
        } else {
            Status::Updated
        }
    }

    /// The word printed for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Updated => "updated",
            Status::Unchanged => "unchanged",
            Status::WouldCreate => "would create",
            Status::WouldUpdate => "would update",
            Status::Unsupported => "unsupported by this store",
        }
    }

    /// True when the resource still differs from the configuration.
    pub fn is_pending(self) -> bool {
        matches!(self, Status::WouldCreate | Status::WouldUpdate)
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The result for one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The kind: `bucket`, `nix-cache-info`, `bucket-policy`, `lifecycle`,
    /// `writer-policy`, `writer-identity`, `attachment`.
    pub resource: &'static str,
    /// Which one (bucket name, policy name, user name, ...).
    pub name: String,
    /// What happened.
    pub status: Status,
    /// Why, in a few words (never a secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Outcome {
    /// An outcome without detail.
    pub fn new(resource: &'static str, name: impl Into<String>, status: Status) -> Outcome {
        Outcome {
            resource,
            name: name.into(),
            status,
            detail: None,
        }
    }

    /// Adds a detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Outcome {
        self.detail = Some(detail.into());
        self
    }
}

/// Request counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Requests {
    /// Reads (S3 GET/HEAD, IAM `Get*`/`List*`).
    pub reads: u64,
    /// Everything else.
    pub writes: u64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Endpoint the run talked to.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// `--dry-run`: nothing was changed.
    pub dry_run: bool,
    /// One outcome per resource, in reconciliation order.
    pub resources: Vec<Outcome>,
    /// Requests sent.
    pub requests: Requests,
    /// True when the store matches the configuration (nothing pending).
    pub converged: bool,
}

impl Report {
    /// A report of `resources`; `converged` follows from their statuses.
    pub fn new(
        endpoint: String,
        bucket: String,
        dry_run: bool,
        resources: Vec<Outcome>,
        requests: Requests,
    ) -> Report {
        let converged = !resources.iter().any(|o| o.status.is_pending());
        Report {
            endpoint,
            bucket,
            dry_run,
            resources,
            requests,
            converged,
        }
    }

    /// The human form: one aligned line per resource, then a summary.
    pub fn to_text(&self) -> String {
        let width = self
            .resources
            .iter()
            .map(|o| o.resource.len() + 1 + o.name.len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for o in &self.resources {
            let what = format!("{} {}", o.resource, o.name);
            out.push_str(&format!("{what:<width$}  {}", o.status.as_str()));
            if let Some(d) = &o.detail {
                out.push_str(&format!(" ({d})"));
            }
            out.push('\n');
        }
        let state = match (self.dry_run, self.converged) {
            (_, true) => "converged",
            (true, false) => "changes pending (dry run: nothing was changed)",
            (false, false) => "not converged",
        };
        out.push_str(&format!(
            "{state}: {} requests ({} reads, {} writes)\n",
            self.requests.reads + self.requests.writes,
            self.requests.reads,
            self.requests.writes
        ));
        out
    }

    /// The outcome for `resource`, if the run had one.
    pub fn get(&self, resource: &str) -> Option<&Outcome> {
        self.resources.iter().find(|o| o.resource == resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json() {
        let r = Report::new(
            "http://127.0.0.1:1".into(),
            "b".into(),
            true,
            vec![
                Outcome::new("bucket", "b", Status::Unchanged),
                Outcome::new("nix-cache-info", "b/nix-cache-info", Status::WouldUpdate)
                    .detail("content differs"),
            ],
            Requests {
                reads: 3,
                writes: 0,
            },
        );
        assert!(!r.converged);
        let text = r.to_text();
        assert!(
            text.starts_with("bucket b                         unchanged\n"),
            "{text}"
        );
        assert!(text.contains("would update (content differs)"), "{text}");
        assert!(
            text.ends_with(
                "\nchanges pending (dry run: nothing was changed): 3 requests (3 reads, 0 writes)\n"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["resources"][1]["status"], "would update");
        assert_eq!(json["requests"]["reads"], 3);
        assert_eq!(json["dryRun"], true);
    }
}
