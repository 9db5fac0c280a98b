//! Configuration parser: parse + validate of any TOML text never panics; every error names its
//! origin and a line and column inside the text, on one line of its own; a configuration that
//! passes compiles into a snapshot, and written back as TOML reads back the same.
#![no_main]

use coremesh_discovery::{parse_config, validate, Snapshot};
use libfuzzer_sys::fuzz_target;

const ORIGIN: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.matches('\n').count() + 1;
    match parse_config(text, ORIGIN) {
        Err(errors) => {
            assert!(!errors.is_empty(), "an error result without errors");
            for e in errors.iter() {
                assert_eq!(e.origin, ORIGIN);
                assert!(
                    (1..=lines).contains(&e.line),
                    "error line {} outside 1..={lines}: {e}",
                    e.line
                );
                assert!(e.column >= 1, "error without a column: {e}");
                assert!(!e.message.is_empty(), "error without a message: {e:?}");
                assert!(
                    !e.message.contains('\n'),
                    "error message spans lines: {e:?}"
                );
                let _ = e.to_string();
            }
            let _ = errors.to_string();
        }
        Ok(config) => {
            assert!(validate(&config).is_empty());
            let _ = Snapshot::build(&config);
            if let Ok(written) = toml::to_string(&config) {
                match parse_config(&written, ORIGIN) {
                    Ok(again) => assert_eq!(again, config, "changed when written back: {written}"),
                    Err(errors) => panic!("written back does not parse: {errors}\n{written}"),
                }
            }
        }
    }
});
