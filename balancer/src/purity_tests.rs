//! Guard: no non-test code in this crate reads the clock or a global RNG.
//!
//! A workspace `clippy.toml` with `disallowed-methods` would be the usual tool; until the
//! workspace has one, this test scans the crate's sources (everything before the first
//! `#[cfg(test)]` of each file; test-only files are skipped).

use std::fs;
use std::path::{Path, PathBuf};

const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "thread_rng",
    "rand::random",
    "from_entropy",
    "OsRng",
    "std::fs",
    "std::net::TcpStream",
    "std::net::UdpSocket",
    "Mutex",
    "RwLock",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn production_code_reads_no_clock_rng_or_io() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 10, "found the sources");
    for file in files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let text = fs::read_to_string(&file).expect("source is readable");
        let production = text.split("#[cfg(test)]").next().unwrap_or("");
        for word in FORBIDDEN {
            assert!(
                !production.contains(word),
                "{} uses {word} outside tests",
                file.display()
            );
        }
    }
}
