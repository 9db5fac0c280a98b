//! Inputs the `config_parse` fuzz target found (fuzz/fuzz_targets/config_parse.rs), kept as
//! regression tests: every configuration error names a line and says what is wrong.

use coremesh_discovery::parse_config;

fn only_error(text: &str) -> String {
    match parse_config(text, "f.toml") {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(errors) => {
            assert_eq!(errors.len(), 1, "{errors}");
            errors.iter().map(ToString::to_string).collect()
        }
    }
}

#[test]
fn a_control_character_in_a_comment_is_named() {
    // The TOML parser gives no message for this one.
    assert_eq!(
        only_error("# a comment\u{0}\n"),
        "f.toml:1:12: invalid TOML: unexpected character '\\0'"
    );
    assert_eq!(
        only_error("[proxy]\n# x\u{1}y\n"),
        "f.toml:2:4: field `proxy`: invalid TOML: unexpected character '\\u{1}'"
    );
}
