//! Attachment URLs in NDJSON, rewritten as the file streams through: constant memory, one pass.
//!
//! In `DocumentReference`, `DiagnosticReport` and `Media` lines, every `"url"` member whose value the
//! caller maps (an attachment on the EHR: `content[].attachment.url`, `presentedForm[].url`,
//! `content.url`) gets the caller's URL instead; every other byte passes unchanged. Lines without
//! `"url"`, or of other resource types, are copied as they are, so the cost is a byte search for
//! most of a file.

use memchr::memmem;
use std::borrow::Cow;

/// Resource types whose attachments the gateway rewrites.
pub const ATTACHMENT_TYPES: [&str; 3] = ["DocumentReference", "DiagnosticReport", "Media"];

/// Longest line rewritten; a longer one (an attachment inlined as `data`, say) passes unchanged.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// Whether a manifest file of `resource_type` may hold attachments: one of [`ATTACHMENT_TYPES`], or
/// no type at all (organized output mixes types).
pub fn may_hold_attachments(resource_type: &str) -> bool {
    resource_type.is_empty() || ATTACHMENT_TYPES.contains(&resource_type)
}

/// Rewrites attachment URLs in an NDJSON stream fed in chunks of any size.
pub struct NdjsonRewriter<F> {
    map: F,
    /// The current line, while it is shorter than [`MAX_LINE_BYTES`].
    pending: Vec<u8>,
    /// The current line grew too long: the rest of it passes unchanged.
    overflowed: bool,
    url_key: memmem::Finder<'static>,
    type_key: memmem::Finder<'static>,
}

impl<F: FnMut(&[u8], &mut Vec<u8>) -> bool> NdjsonRewriter<F> {
    /// `map` gets each attachment URL (JSON-unescaped bytes, UTF-8 when the input is); to replace it,
    /// it appends the replacement as a JSON string (quotes included) to the output it is given and
    /// answers true; to leave it, it appends nothing and answers false.
    pub fn new(map: F) -> Self {
        NdjsonRewriter {
            map,
            pending: Vec::new(),
            overflowed: false,
            url_key: memmem::Finder::new(b"\"url\""),
            type_key: memmem::Finder::new(b"\"resourceType\""),
        }
    }

    /// Whether a line was too long to rewrite (for the log).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Takes the next chunk; appends to `out` every byte that is ready (every whole line).
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let Some(first_nl) = memchr::memchr(b'\n', chunk) else {
            self.hold(chunk, out);
            return;
        };
        let last_nl = memchr::memrchr(b'\n', chunk).unwrap_or(first_nl);
        // The line begun in an earlier chunk, completed by this one.
        let (head, rest) = chunk.split_at(first_nl + 1);
        if self.overflowed {
            out.extend_from_slice(head);
            self.overflowed = false;
        } else if self.pending.is_empty() {
            self.region(head, out);
        } else {
            let mut whole = std::mem::take(&mut self.pending);
            whole.extend_from_slice(head);
            self.region(&whole, out);
            whole.clear();
            self.pending = whole;
        }
        // Every whole line after it, in one pass; then the start of the next line, held.
        let (lines, tail) = rest.split_at(last_nl - first_nl);
        self.region(lines, out);
        self.hold(tail, out);
    }

    /// Keeps the start of a line until its end arrives, or passes it on once it is too long.
    fn hold(&mut self, part: &[u8], out: &mut Vec<u8>) {
        if self.overflowed {
            out.extend_from_slice(part);
        } else if self.pending.len() + part.len() > MAX_LINE_BYTES {
            out.append(&mut self.pending);
            out.extend_from_slice(part);
            self.overflowed = true;
        } else {
            self.pending.extend_from_slice(part);
        }
    }

    /// The end of the stream: the last line, when it has no newline.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let last = std::mem::take(&mut self.pending);
        if self.overflowed {
            out.extend_from_slice(&last);
        } else {
            self.region(&last, out);
        }
    }

    /// Whole lines: each `"url"` key found in one search over all of them, its line's resource type
    /// read once, and the bytes between rewrites copied in bulk.
    fn region(&mut self, lines: &[u8], out: &mut Vec<u8>) {
        let mut copied = 0;
        let mut from = 0;
        // The line last judged, by its start, and whether it holds attachments.
        let mut judged: Option<(usize, bool)> = None;
        while let Some(found) = self.url_key.find(&lines[from..]) {
            let key = from + found;
            from = key + 5;
            let line_start = memchr::memrchr(b'\n', &lines[..key]).map_or(0, |i| i + 1);
            let holds = match judged {
                Some((start, holds)) if start == line_start => holds,
                _ => {
                    let holds = self.holds_attachments(&lines[line_start..]);
                    judged = Some((line_start, holds));
                    holds
                }
            };
            if !holds {
                continue;
            }
            let Some((start, end)) = string_value_after_key(lines, key) else {
                continue;
            };
            from = end + 1;
            let raw = &lines[start..=end];
            if memchr::memchr(b'\n', raw).is_some() {
                continue;
            }
            let value: Option<Cow<[u8]>> = if memchr::memchr(b'\\', raw).is_some() {
                serde_json::from_slice::<String>(raw)
                    .ok()
                    .map(|s| Cow::Owned(s.into_bytes()))
            } else {
                Some(Cow::Borrowed(&raw[1..raw.len() - 1]))
            };
            let Some(value) = value else {
                continue;
            };
            let before = out.len();
            out.extend_from_slice(&lines[copied..start]);
            if (self.map)(&value, out) {
                copied = end + 1;
            } else {
                out.truncate(before);
            }
        }
        out.extend_from_slice(&lines[copied..]);
    }

    /// Whether the line starting `from` has, as its first `resourceType`, one whose attachments are
    /// rewritten.
    fn holds_attachments(&self, from: &[u8]) -> bool {
        let Some(at) = self.type_key.find(from) else {
            return false;
        };
        // Found on a later line: this one has none.
        if memchr::memchr(b'\n', &from[..at]).is_some() {
            return false;
        }
        let line = from;
        let Some((start, end)) = string_value_after_key(line, at) else {
            return false;
        };
        let name = &line[start + 1..end];
        ATTACHMENT_TYPES.iter().any(|t| t.as_bytes() == name)
    }
}

fn skip_ws(line: &[u8], mut i: usize) -> usize {
    while i < line.len() && matches!(line[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// For the key string starting at `key` (its opening quote): when it is an object member's key
/// (after `{` or `,`) whose value is a string, the value's opening and closing quote positions.
fn string_value_after_key(line: &[u8], key: usize) -> Option<(usize, usize)> {
    let before = line[..key]
        .iter()
        .rev()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    if !matches!(before, Some(b'{') | Some(b',')) {
        return None;
    }
    let key_end = key + 1 + memchr::memchr(b'"', &line[key + 1..])?;
    let colon = skip_ws(line, key_end + 1);
    if line.get(colon) != Some(&b':') {
        return None;
    }
    let start = skip_ws(line, colon + 1);
    if line.get(start) != Some(&b'"') {
        return None;
    }
    let mut i = start + 1;
    loop {
        let q = i + memchr::memchr2(b'"', b'\\', &line[i..])?;
        if line[q] == b'\\' {
            i = q + 2;
            if i > line.len() {
                return None;
            }
        } else {
            return Some((start, q));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite_in_chunks(input: &str, chunk: usize) -> String {
        let mut r = NdjsonRewriter::new(|url: &[u8], out: &mut Vec<u8>| {
            let url = std::str::from_utf8(url).unwrap();
            let Some(rest) = url.strip_prefix("https://ehr/") else {
                return false;
            };
            out.extend_from_slice(format!("\"https://gw/a/{rest}\"").as_bytes());
            true
        });
        let mut out = Vec::new();
        for piece in input.as_bytes().chunks(chunk) {
            r.push(piece, &mut out);
        }
        r.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    const INPUT: &str = concat!(
        r#"{"resourceType":"DocumentReference","id":"1","content":[{"attachment":{"contentType":"text/plain","url":"https://ehr/Binary/1"}},{"attachment":{"url" : "https:\/\/ehr\/Binary\/2"}}],"extension":[{"url":"http://hl7.org/x","valueString":"say \"url\": \"https://ehr/no\""}]}"#,
        "\n",
        r#"{"resourceType":"Patient","id":"p","photo":[{"url":"https://ehr/Binary/3"}]}"#,
        "\n",
        r#"{"resourceType":"DiagnosticReport","presentedForm":[{"url":"https://elsewhere/x"}]}"#,
        "\n",
        r#"{"id":"no-type","content":{"url":"https://ehr/Binary/5"}}"#,
        "\n",
        r#"{"resourceType":"Media","content":{"url":"https://ehr/Binary/4"}}"#
    );

    #[test]
    fn attachment_urls_on_the_ehr_are_rewritten_whatever_the_chunking() {
        let expected = concat!(
            r#"{"resourceType":"DocumentReference","id":"1","content":[{"attachment":{"contentType":"text/plain","url":"https://gw/a/Binary/1"}},{"attachment":{"url" : "https://gw/a/Binary/2"}}],"extension":[{"url":"http://hl7.org/x","valueString":"say \"url\": \"https://ehr/no\""}]}"#,
            "\n",
            r#"{"resourceType":"Patient","id":"p","photo":[{"url":"https://ehr/Binary/3"}]}"#,
            "\n",
            r#"{"resourceType":"DiagnosticReport","presentedForm":[{"url":"https://elsewhere/x"}]}"#,
            "\n",
            r#"{"id":"no-type","content":{"url":"https://ehr/Binary/5"}}"#,
            "\n",
            r#"{"resourceType":"Media","content":{"url":"https://gw/a/Binary/4"}}"#
        );
        for chunk in [1, 2, 7, 64, 100_000] {
            assert_eq!(rewrite_in_chunks(INPUT, chunk), expected, "chunk {chunk}");
        }
    }

    #[test]
    fn a_line_longer_than_the_limit_passes_unchanged_and_the_next_is_rewritten() {
        let long = format!(
            "{{\"resourceType\":\"DocumentReference\",\"content\":[{{\"attachment\":{{\"data\":\"{}\",\"url\":\"https://ehr/Binary/9\"}}}}]}}\n",
            "A".repeat(MAX_LINE_BYTES + (2 << 20))
        );
        let input = format!(
            "{long}{{\"resourceType\":\"Media\",\"content\":{{\"url\":\"https://ehr/Binary/4\"}}}}\n"
        );
        let out = rewrite_in_chunks(&input, 1 << 20);
        assert!(out.starts_with(&long));
        assert!(out.ends_with("\"https://gw/a/Binary/4\"}}\n"));
    }

    #[test]
    fn only_attachment_types_or_untyped_files_are_rewritten() {
        assert!(may_hold_attachments("DocumentReference"));
        assert!(may_hold_attachments(""));
        assert!(!may_hold_attachments("Observation"));
    }
}
