//! A store that answers every listing page with the continuation token it
//! was given must give an error, not an endless loop. The "store" here is a
//! stand-in: a loopback socket that replays one fixed ListObjectsV2 page.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

use nix_binary_cache::credentials::Credentials;
use nix_binary_cache::http::{Endpoint, EndpointConfig};
use nix_binary_cache::s3::S3Client;

const PAGE: &str = "<?xml version=\"1.0\"?><ListBucketResult><Name>b</Name>\
<Contents><Key>a.narinfo</Key><Size>1</Size></Contents>\
<IsTruncated>true</IsTruncated><NextContinuationToken>same</NextContinuationToken>\
</ListBucketResult>";

#[tokio::test]
async fn a_repeated_continuation_token_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            // Read the request head; listings have no body.
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                PAGE.len()
            );
        }
    });
    let mut config = EndpointConfig::new(&format!("http://127.0.0.1:{port}")).unwrap();
    config.timeout = Duration::from_secs(5);
    let s3 = S3Client::new(
        Endpoint::new(config).unwrap(),
        Some(Credentials::new("AK", "SK")),
        true,
    );
    let listed = tokio::time::timeout(Duration::from_secs(10), s3.list_all("bucket", "")).await;
    let err = listed
        .expect("the listing must end, not loop")
        .expect_err("a repeated token is an error");
    assert!(err.to_string().contains("same continuation token"), "{err}");
}
