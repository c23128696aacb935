//! The S3 client against a real SeaweedFS: buckets, objects, listing,
//! policies and multipart uploads, signed with aws-sigv4.

mod common;

use common::seaweed::Seaweed;
use nix_binary_cache::credentials::Credentials;
use nix_binary_cache::http::{Endpoint, EndpointConfig};
use nix_binary_cache::s3::S3Client;

fn client(s: &Seaweed) -> S3Client {
    let ep = Endpoint::new(EndpointConfig::new(&s.endpoint).unwrap()).unwrap();
    S3Client::new(
        ep,
        Some(Credentials::new(&s.admin_key, &s.admin_secret)),
        true,
    )
}

#[tokio::test]
async fn objects_listing_policy_multipart() {
    let s = Seaweed::start();
    let c = client(&s);
    assert!(!c.bucket_exists("bucket-one").await.unwrap());
    c.create_bucket("bucket-one").await.unwrap();
    c.create_bucket("bucket-one").await.unwrap(); // a second create is not an error
    assert!(c.bucket_exists("bucket-one").await.unwrap());

    assert_eq!(c.get_object("bucket-one", "missing").await.unwrap(), None);
    c.put_object("bucket-one", "dir/a b+c.txt", "hello", "text/plain")
        .await
        .unwrap();
    assert_eq!(
        c.get_object("bucket-one", "dir/a b+c.txt")
            .await
            .unwrap()
            .unwrap()
            .as_ref(),
        b"hello"
    );
    assert_eq!(
        c.head_object("bucket-one", "dir/a b+c.txt")
            .await
            .unwrap()
            .unwrap()
            .size,
        5
    );
    for i in 0..5 {
        c.put_object("bucket-one", &format!("many/{i}"), "x", "text/plain")
            .await
            .unwrap();
    }
    let (page, next) = c.list_page("bucket-one", "many/", None, 2).await.unwrap();
    assert_eq!(page.len(), 2);
    assert!(next.is_some());
    assert_eq!(c.list_all("bucket-one", "many/").await.unwrap().len(), 5);

    assert_eq!(c.get_bucket_policy("bucket-one").await.unwrap(), None);
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject"],
                       "Resource": ["arn:aws:s3:::bucket-one/*"]}]
    });
    c.put_bucket_policy("bucket-one", &policy).await.unwrap();
    assert!(c.get_bucket_policy("bucket-one").await.unwrap().is_some());

    // Anonymous read works now, anonymous write does not.
    let anon = c.with_credentials(None);
    assert!(
        anon.get_object("bucket-one", "dir/a b+c.txt")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        anon.put_object("bucket-one", "x", "y", "text/plain")
            .await
            .is_err()
    );

    let part = bytes::Bytes::from(vec![7u8; 5 * 1024 * 1024]);
    let id = c
        .create_multipart("bucket-one", "big", "application/octet-stream")
        .await
        .unwrap();
    let e1 = c
        .upload_part("bucket-one", "big", &id, 1, part.clone())
        .await
        .unwrap();
    let e2 = c
        .upload_part(
            "bucket-one",
            "big",
            &id,
            2,
            bytes::Bytes::from_static(b"tail"),
        )
        .await
        .unwrap();
    c.complete_multipart("bucket-one", "big", &id, &[e1, e2])
        .await
        .unwrap();
    assert_eq!(
        c.head_object("bucket-one", "big")
            .await
            .unwrap()
            .unwrap()
            .size,
        5 * 1024 * 1024 + 4
    );
}
