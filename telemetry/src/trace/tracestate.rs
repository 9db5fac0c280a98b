//! [`TraceState`]: the W3C `tracestate` header(s) of a request, validated and kept as
//! slices of the request head so they can be forwarded unchanged without copying.
//!
//! The proxy adds no entry of its own (it makes no vendor decision a downstream needs), so
//! the list goes out as it came in. An invalid list (bad key or value, duplicate key, more
//! than 32 members) is dropped whole, as the W3C recommendation allows.

/// `tracestate` header lines kept from one request (the list may be split over several
/// lines); a request with more loses its trace state.
pub const MAX_TRACESTATE_HEADERS: usize = 4;

/// Members a list may have (W3C Trace Context).
const MAX_MEMBERS: usize = 32;

/// A request's trace state: the raw header values, validated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceState<'h> {
    parts: [&'h [u8]; MAX_TRACESTATE_HEADERS],
    len: usize,
}

impl<'h> TraceState<'h> {
    /// Validates the header values `parts` (in order) as one list; an empty state if any
    /// member is invalid or there are too many lines.
    pub fn parse(parts: &[&'h [u8]]) -> TraceState<'h> {
        if parts.len() > MAX_TRACESTATE_HEADERS || !valid_list(parts) {
            return TraceState::default();
        }
        let mut state = TraceState::default();
        for part in parts {
            let has_member = part.split(|&b| b == b',').any(|m| !trim(m).is_empty());
            if has_member {
                state.parts[state.len] = trim(part);
                state.len += 1;
            }
        }
        state
    }

    /// Whether there is nothing to forward.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends the list as one header value (lines joined with `,`).
    pub fn write_value(&self, out: &mut Vec<u8>) {
        for (i, part) in self.parts[..self.len].iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(part);
        }
    }

    /// The list members (`key=value`), trimmed, in order.
    pub fn members(&self) -> impl Iterator<Item = &'h [u8]> + '_ {
        self.parts[..self.len]
            .iter()
            .flat_map(|part| part.split(|&b| b == b','))
            .map(trim)
            .filter(|m| !m.is_empty())
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

fn valid_list(parts: &[&[u8]]) -> bool {
    let members = || {
        parts
            .iter()
            .flat_map(|part| part.split(|&b| b == b','))
            .map(trim)
            .filter(|m| !m.is_empty())
    };
    let mut count = 0;
    for (i, member) in members().enumerate() {
        count += 1;
        if count > MAX_MEMBERS {
            return false;
        }
        let Some(key) = valid_member(member) else {
            return false;
        };
        if members()
            .take(i)
            .any(|earlier| earlier.split(|&b| b == b'=').next() == Some(key))
        {
            return false;
        }
    }
    true
}

/// The key of `member` if it is a valid `key=value`.
fn valid_member(member: &[u8]) -> Option<&[u8]> {
    let eq = member.iter().position(|&b| b == b'=')?;
    let (key, value) = (&member[..eq], &member[eq + 1..]);
    (valid_key(key) && valid_value(value)).then_some(key)
}

fn key_char(c: u8) -> bool {
    matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/')
}

/// `simple-key = lcalpha 0*255key-char` or `tenant-id "@" system-id` with
/// `tenant-id = (lcalpha / DIGIT) 0*240key-char`, `system-id = lcalpha 0*13key-char`.
fn valid_key(key: &[u8]) -> bool {
    match key.iter().position(|&b| b == b'@') {
        None => {
            key.len() <= 256
                && key.first().is_some_and(u8::is_ascii_lowercase)
                && key.iter().all(|&c| key_char(c))
        }
        Some(at) => {
            let (tenant, system) = (&key[..at], &key[at + 1..]);
            !tenant.is_empty()
                && tenant.len() <= 241
                && (tenant[0].is_ascii_lowercase() || tenant[0].is_ascii_digit())
                && tenant.iter().all(|&c| key_char(c))
                && !system.is_empty()
                && system.len() <= 14
                && system[0].is_ascii_lowercase()
                && system.iter().all(|&c| key_char(c))
        }
    }
}

/// `value = 0*255chr nblk-chr`, `nblk-chr = %x21-2B / %x2D-3C / %x3E-7E`, `chr = %x20 /
/// nblk-chr`.
fn valid_value(value: &[u8]) -> bool {
    let nblk = |c: u8| matches!(c, 0x21..=0x2b | 0x2d..=0x3c | 0x3e..=0x7e);
    !value.is_empty()
        && value.len() <= 256
        && value.last().is_some_and(|&c| nblk(c))
        && value.iter().all(|&c| c == b' ' || nblk(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(state: &TraceState<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        state.write_value(&mut out);
        out
    }

    #[test]
    fn valid_lists_pass_through() {
        let state = TraceState::parse(&[b"rojo=00f067aa0ba902b7, congo=t61rcWkgMzE", b" x@y=1 "]);
        assert_eq!(
            joined(&state),
            b"rojo=00f067aa0ba902b7, congo=t61rcWkgMzE,x@y=1"
        );
        let members: Vec<&[u8]> = state.members().collect();
        assert_eq!(
            members,
            [
                &b"rojo=00f067aa0ba902b7"[..],
                b"congo=t61rcWkgMzE",
                b"x@y=1"
            ]
        );
        assert!(TraceState::parse(&[b" , ,"]).is_empty());
        assert!(TraceState::parse(&[]).is_empty());
    }

    #[test]
    fn invalid_lists_are_dropped_whole() {
        for bad in [
            &b"Rojo=1"[..],
            b"rojo",
            b"rojo=",
            b"rojo=a,rojo=b",
            b"1abc=x",
            b"a@=x",
            b"a@Bc=x",
            b"rojo=a=b,ok=1",
            b"rojo=a\tb",
        ] {
            assert!(
                TraceState::parse(&[bad]).is_empty(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let many: Vec<u8> = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",")
            .into_bytes();
        assert!(TraceState::parse(&[&many]).is_empty());
        let lines: [&[u8]; 5] = [b"a=1", b"b=1", b"c=1", b"d=1", b"e=1"];
        assert!(TraceState::parse(&lines).is_empty());
        assert!(!TraceState::parse(&lines[..4]).is_empty());
    }

    #[test]
    fn value_with_inner_space_is_fine() {
        assert_eq!(joined(&TraceState::parse(&[b"a=x y"])), b"a=x y");
    }
}
