//! The JSON-path subset mappings use: `$`, `.field`, `[index]`, `['quoted']` and `["quoted"]`.

use lotus_plugin_sdk::serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Field(String),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub segments: Vec<Segment>,
}

/// Why a path did not parse: the character position and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    pub position: usize,
    pub message: String,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at character {}: {}", self.position, self.message)
    }
}

impl Path {
    pub fn parse(text: &str) -> Result<Path, PathError> {
        let err = |position: usize, message: &str| PathError {
            position,
            message: message.to_owned(),
        };
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let mut i = 0;
        if chars.first().map(|&(_, c)| c) != Some('$') {
            return Err(err(0, "a path starts with `$`"));
        }
        i += 1;
        let mut segments = Vec::new();
        while i < chars.len() {
            let (at, c) = chars[i];
            match c {
                '.' => {
                    let start = i + 1;
                    let mut end = start;
                    while end < chars.len() && !matches!(chars[end].1, '.' | '[') {
                        end += 1;
                    }
                    if end == start {
                        return Err(err(at, "`.` must be followed by a field name"));
                    }
                    segments.push(Segment::Field(
                        chars[start..end].iter().map(|&(_, c)| c).collect(),
                    ));
                    i = end;
                }
                '[' => {
                    let Some(&(_, next)) = chars.get(i + 1) else {
                        return Err(err(at, "`[` is not closed"));
                    };
                    if next == '\'' || next == '"' {
                        let start = i + 2;
                        let close = (start..chars.len())
                            .find(|&j| chars[j].1 == next)
                            .ok_or_else(|| err(at, "quoted field name is not closed"))?;
                        if chars.get(close + 1).map(|&(_, c)| c) != Some(']') {
                            return Err(err(
                                chars.get(close + 1).map_or(text.len(), |&(p, _)| p),
                                "expected `]`",
                            ));
                        }
                        segments.push(Segment::Field(
                            chars[start..close].iter().map(|&(_, c)| c).collect(),
                        ));
                        i = close + 2;
                    } else {
                        let start = i + 1;
                        let close = (start..chars.len())
                            .find(|&j| chars[j].1 == ']')
                            .ok_or_else(|| err(at, "`[` is not closed"))?;
                        let digits: String = chars[start..close].iter().map(|&(_, c)| c).collect();
                        let index = digits.parse().map_err(|_| {
                            err(
                                chars[start].0,
                                "an index is a non-negative integer; quote field names",
                            )
                        })?;
                        segments.push(Segment::Index(index));
                        i = close + 1;
                    }
                }
                _ => return Err(err(at, "expected `.` or `[`")),
            }
        }
        Ok(Path { segments })
    }

    pub fn get<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        self.segments
            .iter()
            .try_fold(root, |value, segment| match segment {
                Segment::Field(name) => value.get(name.as_str()),
                Segment::Index(i) => value.get(*i),
            })
    }

    /// Writes `new` at the path, creating objects and arrays (padded with `null`) on the way.
    /// Fails with the depth at which an existing value has the wrong type.
    pub fn set(&self, root: &mut Value, new: Value) -> Result<(), usize> {
        let mut value = root;
        for (depth, segment) in self.segments.iter().enumerate() {
            value = match segment {
                Segment::Field(name) => {
                    if value.is_null() {
                        *value = Value::Object(Default::default());
                    }
                    value
                        .as_object_mut()
                        .ok_or(depth)?
                        .entry(name.clone())
                        .or_insert(Value::Null)
                }
                Segment::Index(i) => {
                    if value.is_null() {
                        *value = Value::Array(Vec::new());
                    }
                    let items = value.as_array_mut().ok_or(depth)?;
                    if items.len() <= *i {
                        items.resize(*i + 1, Value::Null);
                    }
                    &mut items[*i]
                }
            };
        }
        *value = new;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lotus_plugin_sdk::serde_json::json;

    #[test]
    fn parses_the_subset() {
        let p = Path::parse("$.data['air temp'][2].v").unwrap();
        assert_eq!(
            p.segments,
            vec![
                Segment::Field("data".into()),
                Segment::Field("air temp".into()),
                Segment::Index(2),
                Segment::Field("v".into())
            ]
        );
        assert_eq!(
            Path::parse("$[\"a.b\"]").unwrap().segments,
            vec![Segment::Field("a.b".into())]
        );
        assert!(Path::parse("$").unwrap().segments.is_empty());
    }

    #[test]
    fn errors_give_the_character() {
        assert_eq!(Path::parse("data.temp").unwrap_err().position, 0);
        assert_eq!(Path::parse("$.data..x").unwrap_err().position, 6);
        assert_eq!(Path::parse("$.a[x]").unwrap_err().position, 4);
        assert_eq!(Path::parse("$.a['x'").unwrap_err().position, 7);
        assert_eq!(Path::parse("$x").unwrap_err().position, 1);
    }

    #[test]
    fn get_and_set() {
        let doc = json!({"data": {"temp": 21.5, "list": [1, {"v": 2}]}});
        assert_eq!(
            Path::parse("$.data.temp").unwrap().get(&doc),
            Some(&json!(21.5))
        );
        assert_eq!(
            Path::parse("$.data.list[1].v").unwrap().get(&doc),
            Some(&json!(2))
        );
        assert_eq!(Path::parse("$.data.missing").unwrap().get(&doc), None);

        let mut out = Value::Null;
        Path::parse("$.cmd.relays[1]")
            .unwrap()
            .set(&mut out, json!(true))
            .unwrap();
        Path::parse("$.cmd.mode")
            .unwrap()
            .set(&mut out, json!("eco"))
            .unwrap();
        assert_eq!(out, json!({"cmd": {"relays": [null, true], "mode": "eco"}}));
        assert_eq!(
            Path::parse("$.cmd.mode.x").unwrap().set(&mut out, json!(1)),
            Err(2)
        );
    }
}
