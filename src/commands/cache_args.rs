//! Flags shared by the commands that work on a cache after it exists
//! (`push`, `upload-queue`, `resign`, `keys retire`, `doctor`): where it
//! is, from flags or from a manifest's `cache` section, a flag given as
//! well overriding the manifest's value.

use std::path::PathBuf;

use crate::credentials::Credentials;
use crate::error::{Error, Result};
use crate::http::{Endpoint, EndpointConfig};
use crate::manifest::{self, Manifest};
use crate::s3::{S3Client, validate_bucket_name};
use crate::signing::PublicKey;

/// Where the cache is.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CacheArgs {
    /// Manifest written by the Nix modules: supplies every option below
    /// that is not given as a flag.
    #[arg(long, value_name = "PATH")]
    pub manifest: Option<PathBuf>,
    /// S3 endpoint URL, e.g. https://s3.example.org.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Bucket of the cache.
    #[arg(long, value_name = "NAME")]
    pub bucket: Option<String>,
    /// SigV4 region [default: us-east-1].
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Allow plain http to a host that is not loopback.
    #[arg(long)]
    pub allow_insecure_http: bool,
    /// Extra PEM CA bundle for a store with a self-signed certificate.
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
}

/// The cache resolved from flags and manifest.
#[derive(Debug, Clone)]
pub struct CacheLocation {
    /// The manifest, when one was given (validated).
    pub manifest: Option<Manifest>,
    /// How to reach the store.
    pub endpoint: EndpointConfig,
    /// The bucket.
    pub bucket: String,
    /// Path-style addressing (`endpoint/bucket`).
    pub path_style: bool,
}

/// A value from a flag, else from the manifest, else an error naming both.
pub fn required<T>(v: Option<T>, flag: &str, field: &str) -> Result<T> {
    v.ok_or_else(|| {
        Error::config(
            flag,
            format!("missing: give {flag}, or --manifest with {field} set"),
        )
    })
}

impl CacheArgs {
    /// Reads and validates the manifest (if any) and resolves the endpoint
    /// and bucket; no request is sent.
    pub fn resolve(&self) -> Result<CacheLocation> {
        let m = self
            .manifest
            .as_deref()
            .map(manifest::load_valid)
            .transpose()?;
        let c = m.as_ref().map(|m| &m.cache);
        let endpoint = required(
            self.endpoint.clone().or(c.map(|c| c.endpoint.clone())),
            "--endpoint",
            "cache.endpoint",
        )?;
        let bucket = required(
            self.bucket.clone().or(c.map(|c| c.bucket.clone())),
            "--bucket",
            "cache.bucket",
        )?;
        validate_bucket_name(&bucket).map_err(|e| Error::config("--bucket", e))?;
        let mut cfg = EndpointConfig::new(&endpoint)?;
        cfg.region = self
            .region
            .clone()
            .or(c.map(|c| c.region.clone()))
            .unwrap_or_else(|| "us-east-1".into());
        cfg.allow_insecure_http =
            self.allow_insecure_http || c.is_some_and(|c| c.allow_insecure_http);
        cfg.ca_file = self.ca_file.clone().or(c.and_then(|c| c.ca_file.clone()));
        crate::http::check_transport_security(&cfg.url, cfg.allow_insecure_http, "--endpoint")?;
        Ok(CacheLocation {
            path_style: c.is_none_or(|c| c.path_style),
            manifest: m,
            endpoint: cfg,
            bucket,
        })
    }
}

impl CacheLocation {
    /// A client for the bucket, signing with `creds` (anonymous: `None`).
    pub fn client(&self, creds: Option<Credentials>) -> Result<S3Client> {
        Ok(S3Client::new(
            Endpoint::new(self.endpoint.clone())?,
            creds,
            self.path_style,
        ))
    }

    /// The writer credentials file: the flag, else the manifest's
    /// `push.writerCredentialsFile`, else its provision state file.
    pub fn writer_credentials_file(&self, flag: Option<PathBuf>) -> Option<PathBuf> {
        flag.or_else(|| {
            let m = self.manifest.as_ref()?;
            m.push
                .as_ref()
                .map(|p| p.writer_credentials_file.clone())
                .or_else(|| m.provision.as_ref().map(|p| p.writer_credentials_path()))
        })
    }

    /// The signing key file: the flag, else the manifest's `push.signingKeyFile`.
    pub fn signing_key_file(&self, flag: Option<PathBuf>) -> Option<PathBuf> {
        flag.or_else(|| {
            Some(
                self.manifest
                    .as_ref()?
                    .push
                    .as_ref()?
                    .signing_key_file
                    .clone(),
            )
        })
    }

    /// The public keys clients trust: the flags (`flag` names them in
    /// errors), else the manifest's `trust.publicKeys` and
    /// `trust.retiredPublicKeys`.
    pub fn trusted_keys(&self, given: &[String], flag: &str) -> Result<Vec<PublicKey>> {
        let from_manifest = || {
            self.manifest
                .as_ref()
                .and_then(|m| m.trust.as_ref())
                .map(|t| {
                    t.public_keys
                        .iter()
                        .chain(&t.retired_public_keys)
                        .cloned()
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        let texts = if given.is_empty() {
            from_manifest()
        } else {
            given.to_vec()
        };
        texts
            .iter()
            .map(|k| PublicKey::parse(k).map_err(|m| Error::config(flag, format!("`{k}` {m}"))))
            .collect()
    }
}
