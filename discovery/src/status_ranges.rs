//! Status specs used by `failure_statuses`: "5xx", a single status "503", or a range
//! "500-504", each turned into an inclusive range.

use std::ops::RangeInclusive;

/// Parse one spec; `None` when it is not one of the three forms or not within 100..=599.
pub fn parse_status_spec(spec: &str) -> Option<RangeInclusive<u16>> {
    let spec = spec.trim();
    let range = if let Some(class) = spec.strip_suffix("xx").or_else(|| spec.strip_suffix("XX")) {
        let c: u16 = class.parse().ok()?;
        (c * 100)..=(c * 100 + 99)
    } else if let Some((a, b)) = spec.split_once('-') {
        let a: u16 = a.trim().parse().ok()?;
        let b: u16 = b.trim().parse().ok()?;
        a..=b
    } else {
        let s: u16 = spec.parse().ok()?;
        s..=s
    };
    let ok = *range.start() >= 100 && *range.end() <= 599 && range.start() <= range.end();
    ok.then_some(range)
}

/// Parse every spec, skipping invalid ones (validation reports those).
pub fn parse_status_specs(specs: &[String]) -> Vec<RangeInclusive<u16>> {
    specs.iter().filter_map(|s| parse_status_spec(s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms() {
        assert_eq!(parse_status_spec("5xx"), Some(500..=599));
        assert_eq!(parse_status_spec("503"), Some(503..=503));
        assert_eq!(parse_status_spec("500-504"), Some(500..=504));
        assert_eq!(parse_status_spec("6xx"), None);
        assert_eq!(parse_status_spec("504-500"), None);
        assert_eq!(parse_status_spec("abc"), None);
        assert_eq!(parse_status_spec("99"), None);
    }
}
