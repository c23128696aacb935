//! The MinIO identity plane: the admin API v3 client and the payload
//! encryption it needs. The bucket plane of a MinIO store is plain S3
//! ([`crate::s3`]).

pub mod admin;
pub mod crypto;
