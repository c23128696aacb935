//! Replays every input the fuzzers found (`fuzz/regressions/<target>/`) and
//! every seed (`fuzz/seeds/<target>/`) through the same entry function the
//! fuzz target calls, on the stable toolchain, in every CI run. A fixed
//! crash that comes back, or a seed that breaks a round-trip property,
//! fails here with the file's name.

use std::path::Path;

use nix_binary_cache::fuzzing::TARGETS;

fn inputs(target: &str) -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        files.extend(dir.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
    }
    files.sort();
    files
}

#[test]
fn every_target_has_a_fuzz_target_and_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, _) in TARGETS {
        let target = root.join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&target)
            .unwrap_or_else(|e| panic!("{}: {e}", target.display()));
        assert!(
            text.contains(&format!("fuzzing::{name}(")),
            "{} does not call fuzzing::{name}",
            target.display()
        );
        assert!(!inputs(name).is_empty(), "no seeds for {name}");
    }
}

#[test]
fn replay_seeds_and_regressions() {
    let mut failed = Vec::new();
    let mut count = 0;
    for (name, entry) in TARGETS {
        for file in inputs(name) {
            let data = std::fs::read(&file).unwrap();
            count += 1;
            if let Err(e) = std::panic::catch_unwind(|| entry(&data)) {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failed.push(format!("{}: {msg}", file.display()));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {count} inputs fail:\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert!(count >= TARGETS.len());
}
