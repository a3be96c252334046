//! LIKE patterns: `%` matches any run of characters, `_` exactly one character; everything
//! else matches itself, case-sensitively. There is no escape character.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(Box<str>),
    AnyOne,
    AnyRun,
}

/// A pattern split into literal runs and wildcards once, at parse time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LikePattern {
    parts: Vec<Part>,
}

impl LikePattern {
    pub fn new(pattern: &str) -> Self {
        let mut parts = Vec::new();
        let mut text = String::new();
        for c in pattern.chars() {
            let wildcard = match c {
                '%' => Part::AnyRun,
                '_' => Part::AnyOne,
                _ => {
                    text.push(c);
                    continue;
                }
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text).into()));
            }
            // `%%` means the same as `%`; collapsing keeps backtracking short.
            if !(wildcard == Part::AnyRun && parts.last() == Some(&Part::AnyRun)) {
                parts.push(wildcard);
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text.into()));
        }
        LikePattern { parts }
    }

    /// Greedy matching that, on a mismatch, retries from the most recent `%` one character
    /// further on; worst case O(pattern × text), no allocation.
    pub fn matches(&self, text: &str) -> bool {
        let parts = &self.parts;
        let (mut p, mut t) = (0usize, 0usize);
        // Part index after the last `%` seen, and the text position it is currently tried at.
        let mut resume: Option<(usize, usize)> = None;
        loop {
            if p < parts.len() {
                match &parts[p] {
                    Part::AnyRun => {
                        if p + 1 == parts.len() {
                            // A trailing `%` accepts whatever is left.
                            return true;
                        }
                        resume = Some((p + 1, t));
                        p += 1;
                        continue;
                    }
                    Part::AnyOne => {
                        if let Some(c) = text[t..].chars().next() {
                            t += c.len_utf8();
                            p += 1;
                            continue;
                        }
                    }
                    Part::Text(literal) => {
                        if text[t..].starts_with(literal.as_ref()) {
                            t += literal.len();
                            p += 1;
                            continue;
                        }
                    }
                }
            } else if t == text.len() {
                return true;
            }
            match resume {
                Some((after_run, start)) if start < text.len() => {
                    let next = start + text[start..].chars().next().map_or(1, char::len_utf8);
                    resume = Some((after_run, next));
                    p = after_run;
                    t = next;
                }
                _ => return false,
            }
        }
    }
}
