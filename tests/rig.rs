//! The test rig itself: SeaweedFS starts with admin credentials (and so is
//! not wide open), and the private Nix builds without touching the network.

mod common;

use common::nix::{TestNix, chain_expr};
use common::seaweed::Seaweed;

#[test]
fn seaweed_starts_closed_to_anonymous_writes() {
    let s = Seaweed::start();
    // Guard: a SeaweedFS without identities accepts anonymous writes.
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sys,urllib.request as u\n\
             r=u.Request(sys.argv[1]+'/guard-bucket',method='PUT')\n\
             try:\n  u.urlopen(r,timeout=5); print('200')\n\
             except u.HTTPError as e: print(e.code)",
        )
        .arg(&s.endpoint)
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        code,
        "403",
        "anonymous CreateBucket must be refused:\n{}",
        s.log()
    );
}

#[test]
fn test_nix_builds_offline() {
    let nix = TestNix::new();
    let outs = nix.build_expr(&chain_expr("rig", 2));
    assert_eq!(outs.len(), 1);
    assert!(outs[0].starts_with("/nix/store/"), "{outs:?}");
    let data = std::fs::read_to_string(format!("{}/share/data", outs[0])).unwrap();
    assert_eq!(data.trim(), "rig 1");
}
