//! nix-binary-cache: turns an S3-compatible object store into a signed,
//! trusted Nix binary cache. The binary is a thin shell over this library so
//! that tests, benchmarks and fuzz targets call the same code.

pub mod aws_config;
pub mod cli;
pub mod commands;
pub mod credentials;
pub mod doctor;
pub mod error;
pub mod fsutil;
pub mod fuzzing;
pub mod hash;
pub mod http;
pub mod iam;
pub mod manifest;
pub mod minio;
pub mod nar;
pub mod narinfo;
pub mod nix32;
pub mod nix_conf;
pub mod pathinfo;
pub mod provision;
pub mod push;
pub mod resign;
pub mod s3;
pub mod signing;

pub use error::{Error, Result};
