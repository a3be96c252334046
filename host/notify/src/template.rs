//! Message templates: a subject and a body written in minijinja (Jinja2) syntax.
//!
//! Templates are compiled once with [`MessageTemplate::compile`] and rendered
//! many times with [`MessageTemplate::render`] against a JSON context such as
//! `{"event": {"title": "泵站压力低", "level": 1}, "device": {...}}`.
//!
//! Rendering rules, chosen for text notifications rather than web pages:
//!
//! * **No auto-escaping.** Output is plain text (e-mail text parts, SMS, IM),
//!   so `<`, `&` and quotes are emitted as-is. A template that produces HTML
//!   must escape untrusted values itself with the `escape` (`e`) filter.
//! * **Strict undefined.** Printing, iterating over, testing (`{% if x %}`) or
//!   reading an attribute of a variable that is missing from the context is an
//!   error naming the variable, so a typo such as `event.locaton` is caught
//!   instead of silently producing an empty line in a duty officer's message.
//!   Optional values are written `{{ event.note | default("-") }}` or
//!   `{% if event.note is defined %}`.
//! * **Block tags do not leave blank lines.** `trim_blocks` and
//!   `lstrip_blocks` are on, so a `{% if %}` on its own line disappears from
//!   the output together with its newline and indentation.
//! * **Single-line subjects.** Line breaks in a rendered subject are replaced
//!   by spaces, because a value taken from an event (a device name, a free-form
//!   note) must not be able to break the subject line of a message.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde_json::Value as JsonValue;

/// Which part of a [`MessageTemplate`] an error refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TemplatePart {
    /// The subject line (e-mail subject, IM card title).
    Subject,
    /// The message body.
    Body,
}

impl TemplatePart {
    fn source_name(self) -> &'static str {
        match self {
            TemplatePart::Subject => "subject",
            TemplatePart::Body => "body",
        }
    }
}

impl fmt::Display for TemplatePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.source_name())
    }
}

/// Why a template could not be compiled or rendered.
///
/// The messages name the template, the part (subject or body) and the line,
/// so they can be shown to the operator who wrote the template unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template text is not valid minijinja syntax.
    #[error("template `{template}`: {part} line {line}, column {column}: syntax error: {message}")]
    Syntax {
        /// Template name given to [`MessageTemplate::compile`].
        template: String,
        /// Subject or body.
        part: TemplatePart,
        /// 1-based line within the part.
        line: usize,
        /// 1-based column (in characters) within the line.
        column: usize,
        /// What the parser expected or found.
        message: String,
    },
    /// The template uses a variable the rendering context does not provide.
    #[error(
        "template `{template}`: {part} line {line}: undefined variable `{variable}` \
         (check the spelling, or write `{{{{ {variable} | default(\"-\") }}}}` if it is optional)"
    )]
    UndefinedVariable {
        /// Template name given to [`MessageTemplate::compile`].
        template: String,
        /// Subject or body.
        part: TemplatePart,
        /// 1-based line within the part.
        line: usize,
        /// The variable path as written in the template, e.g. `event.locaton`.
        variable: String,
    },
    /// Any other failure while rendering (a wrong filter argument, a type
    /// mismatch such as adding a number to a string, an unknown filter).
    #[error("template `{template}`: {part}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Render {
        /// Template name given to [`MessageTemplate::compile`].
        template: String,
        /// Subject or body.
        part: TemplatePart,
        /// 1-based line within the part, when known.
        line: Option<usize>,
        /// What went wrong.
        message: String,
    },
    /// The rendering context is not a JSON object.
    #[error(
        "template `{template}`: the rendering context must be a JSON object whose keys are the \
         template's variables, got {found}"
    )]
    InvalidContext {
        /// Template name given to [`MessageTemplate::compile`].
        template: String,
        /// JSON type that was passed instead (`array`, `string`, ...).
        found: &'static str,
    },
    /// The template name is empty.
    #[error("a message template needs a non-empty name")]
    EmptyName,
}

/// A rendered message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The subject, always a single line without leading or trailing blanks.
    pub subject: String,
    /// The body as produced by the template.
    pub body: String,
}

/// A compiled subject + body template.
///
/// Cloning is cheap (the compiled form is shared), and the type is
/// `Send + Sync`, so one instance can serve every rule that uses it.
#[derive(Clone)]
pub struct MessageTemplate {
    inner: Arc<Compiled>,
}

struct Compiled {
    name: String,
    subject: String,
    body: String,
    // One environment per template keeps templates independent: a template
    // cannot `{% include %}` another operator's template by name.
    env: Environment<'static>,
}

impl fmt::Debug for MessageTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageTemplate")
            .field("name", &self.inner.name)
            .field("subject", &self.inner.subject)
            .field("body", &self.inner.body)
            .finish()
    }
}

impl MessageTemplate {
    /// Compiles a template from its subject and body source.
    ///
    /// `name` identifies the template in error messages. Syntax errors name
    /// the part, line and column and say what the parser expected.
    pub fn compile(
        name: &str,
        subject: &str,
        body: &str,
    ) -> Result<MessageTemplate, TemplateError> {
        if name.trim().is_empty() {
            return Err(TemplateError::EmptyName);
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        for (part, source) in [(TemplatePart::Subject, subject), (TemplatePart::Body, body)] {
            env.add_template_owned(part.source_name(), source.to_owned())
                .map_err(|err| syntax_error(name, part, source, &err))?;
        }
        Ok(MessageTemplate {
            inner: Arc::new(Compiled {
                name: name.to_owned(),
                subject: subject.to_owned(),
                body: body.to_owned(),
                env,
            }),
        })
    }

    /// The name given at compile time.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The subject source text.
    pub fn subject_source(&self) -> &str {
        &self.inner.subject
    }

    /// The body source text.
    pub fn body_source(&self) -> &str {
        &self.inner.body
    }

    /// Renders subject and body against `context`, which must be a JSON
    /// object (or `null` for templates without variables).
    ///
    /// A variable missing from the context is a
    /// [`TemplateError::UndefinedVariable`] naming it.
    pub fn render(&self, context: &JsonValue) -> Result<Rendered, TemplateError> {
        let found = match context {
            JsonValue::Object(_) | JsonValue::Null => None,
            JsonValue::Array(_) => Some("an array"),
            JsonValue::String(_) => Some("a string"),
            JsonValue::Number(_) => Some("a number"),
            JsonValue::Bool(_) => Some("a boolean"),
        };
        if let Some(found) = found {
            return Err(TemplateError::InvalidContext {
                template: self.inner.name.clone(),
                found,
            });
        }
        let ctx = minijinja::Value::from_serialize(context);
        let subject = self.render_part(TemplatePart::Subject, &ctx, context)?;
        let body = self.render_part(TemplatePart::Body, &ctx, context)?;
        Ok(Rendered {
            subject: single_line(&subject),
            body,
        })
    }

    /// Top-level variables the template reads from the context (for example
    /// `event` and `device` for `{{ event.title }} at {{ device.name }}`),
    /// sorted. Loop variables and `{% set %}` names are not included.
    pub fn variables(&self) -> BTreeSet<String> {
        self.collect_variables(false)
    }

    /// Like [`variables`](Self::variables) but with attribute paths, e.g.
    /// `event.title` and `device.name`, for showing operators which fields a
    /// template expects.
    pub fn variable_paths(&self) -> BTreeSet<String> {
        self.collect_variables(true)
    }

    fn collect_variables(&self, nested: bool) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for part in [TemplatePart::Subject, TemplatePart::Body] {
            if let Ok(tmpl) = self.inner.env.get_template(part.source_name()) {
                out.extend(tmpl.undeclared_variables(nested));
            }
        }
        out
    }

    fn render_part(
        &self,
        part: TemplatePart,
        ctx: &minijinja::Value,
        json: &JsonValue,
    ) -> Result<String, TemplateError> {
        let tmpl = self
            .inner
            .env
            .get_template(part.source_name())
            .map_err(|err| TemplateError::Render {
                template: self.inner.name.clone(),
                part,
                line: None,
                message: err.to_string(),
            })?;
        tmpl.render(ctx).map_err(|err| {
            let source = match part {
                TemplatePart::Subject => &self.inner.subject,
                TemplatePart::Body => &self.inner.body,
            };
            if err.kind() == ErrorKind::UndefinedError
                && let Some(variable) = undefined_variable(&err, source, &tmpl, json)
            {
                return TemplateError::UndefinedVariable {
                    template: self.inner.name.clone(),
                    part,
                    line: err.line().unwrap_or(1),
                    variable,
                };
            }
            TemplateError::Render {
                template: self.inner.name.clone(),
                part,
                line: err.line(),
                message: describe(&err),
            }
        })
    }
}

fn syntax_error(
    name: &str,
    part: TemplatePart,
    source: &str,
    err: &minijinja::Error,
) -> TemplateError {
    let (line, column) = match err.range() {
        Some(range) => position(source, range.start),
        None => (err.line().unwrap_or(1), 1),
    };
    TemplateError::Syntax {
        template: name.to_owned(),
        part,
        line: err.line().unwrap_or(line),
        column,
        message: describe(err),
    }
}

/// 1-based line and character column of a byte offset.
fn position(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn describe(err: &minijinja::Error) -> String {
    match err.detail() {
        Some(detail) => detail.to_owned(),
        None => err.kind().to_string(),
    }
}

/// Names the variable behind an undefined-value error.
///
/// minijinja reports the span of the failing expression. When that span is a
/// plain variable path it is the answer; when it is a larger expression
/// (`a ~ b.c`), the variable paths the template uses that are absent from the
/// context and occur inside the span are reported instead.
fn undefined_variable(
    err: &minijinja::Error,
    source: &str,
    tmpl: &minijinja::Template<'_, '_>,
    context: &JsonValue,
) -> Option<String> {
    let span = err.range().and_then(|r| source.get(r)).map(str::trim);
    if let Some(span) = span
        && is_variable_path(span)
    {
        return Some(span.to_owned());
    }
    let missing: Vec<String> = tmpl
        .undeclared_variables(true)
        .into_iter()
        .filter(|path| !path_exists(context, path))
        .filter(|path| span.is_none_or(|s| s.contains(path.as_str())))
        .collect();
    match (missing.len(), span) {
        (0, Some(span)) => Some(span.to_owned()),
        (0, None) => None,
        _ => Some(missing.join("`, `")),
    }
}

fn is_variable_path(s: &str) -> bool {
    let mut segments = s.split('.');
    segments.all(|seg| {
        let mut chars = seg.chars();
        matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_')
            && chars.all(|c| c.is_alphanumeric() || c == '_')
    })
}

fn path_exists(context: &JsonValue, path: &str) -> bool {
    let mut current = context;
    for segment in path.split('.') {
        match current.get(segment) {
            Some(next) => current = next,
            None => return false,
        }
    }
    true
}

fn single_line(s: &str) -> String {
    s.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pump_alarm() -> MessageTemplate {
        MessageTemplate::compile(
            "pump-alarm",
            "[L{{ event.level }}] {{ event.title }} - {{ device.name }}",
            "Alarm: {{ event.title }}\n\
             Location: {{ event.location }}\n\
             {% if event.note is defined %}\n\
             Note: {{ event.note }}\n\
             {% endif %}\n\
             Readings:\n\
             {% for r in readings %}\n\
             - {{ r.name }} = {{ r.value }} {{ r.unit }}\n\
             {% endfor %}\n",
        )
        .unwrap()
    }

    fn context() -> JsonValue {
        json!({
            "event": {"title": "泵站压力低", "level": 1, "location": "东湖 3 号泵站"},
            "device": {"name": "PS-03 <main>"},
            "readings": [
                {"name": "出水压力", "value": 0.12, "unit": "MPa"},
                {"name": "flow", "value": 37, "unit": "m³/h"}
            ]
        })
    }

    #[test]
    fn renders_subject_and_body_with_chinese_text() {
        let rendered = pump_alarm().render(&context()).unwrap();
        assert_eq!(rendered.subject, "[L1] 泵站压力低 - PS-03 <main>");
        assert_eq!(
            rendered.body,
            "Alarm: 泵站压力低\nLocation: 东湖 3 号泵站\nReadings:\n\
             - 出水压力 = 0.12 MPa\n- flow = 37 m³/h\n"
        );
    }

    #[test]
    fn optional_block_renders_when_defined() {
        let mut ctx = context();
        ctx["event"]["note"] = json!("值班人员已到场");
        let body = pump_alarm().render(&ctx).unwrap().body;
        assert!(
            body.contains("Location: 东湖 3 号泵站\nNote: 值班人员已到场\nReadings:"),
            "{body}"
        );
    }

    #[test]
    fn no_html_escaping_in_text_output() {
        let t = MessageTemplate::compile("t", "{{ a }}", "{{ a }} & {{ b }}").unwrap();
        let r = t.render(&json!({"a": "<b>\"x\"</b>", "b": "R&D"})).unwrap();
        assert_eq!(r.body, "<b>\"x\"</b> & R&D");
        // Explicit escaping stays available for HTML bodies.
        let t = MessageTemplate::compile("t", "s", "{{ a | e }}").unwrap();
        assert_eq!(t.render(&json!({"a": "<b>"})).unwrap().body, "&lt;b&gt;");
    }

    #[test]
    fn undefined_attribute_is_named_with_part_and_line() {
        let t = MessageTemplate::compile(
            "pump-alarm",
            "{{ event.title }}",
            "Alarm: {{ event.title }}\nLocation: {{ event.locaton }}\n",
        )
        .unwrap();
        let err = t.render(&context()).unwrap_err();
        assert_eq!(
            err,
            TemplateError::UndefinedVariable {
                template: "pump-alarm".into(),
                part: TemplatePart::Body,
                line: 2,
                variable: "event.locaton".into(),
            }
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "template `pump-alarm`: body line 2: undefined variable `event.locaton`"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("{{ event.locaton | default(\"-\") }}"),
            "{msg}"
        );
    }

    #[test]
    fn undefined_top_level_variable_in_subject() {
        let t = MessageTemplate::compile("t", "{{ evnt.title }}", "ok").unwrap();
        match t.render(&context()).unwrap_err() {
            TemplateError::UndefinedVariable {
                part,
                line,
                variable,
                ..
            } => {
                assert_eq!(part, TemplatePart::Subject);
                assert_eq!(line, 1);
                assert_eq!(variable, "evnt.title");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn undefined_inside_larger_expression_names_the_missing_path() {
        let t = MessageTemplate::compile("t", "s", "a\nb\n{{ event.title ~ event.nope }}").unwrap();
        match t.render(&context()).unwrap_err() {
            TemplateError::UndefinedVariable { line, variable, .. } => {
                assert_eq!(line, 3);
                assert_eq!(variable, "event.nope");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn undefined_in_condition_is_an_error_but_default_and_defined_work() {
        let t = MessageTemplate::compile("t", "s", "{% if event.note %}x{% endif %}").unwrap();
        assert!(matches!(
            t.render(&context()),
            Err(TemplateError::UndefinedVariable { ref variable, .. }) if variable == "event.note"
        ));
        let t = MessageTemplate::compile(
            "t",
            "s",
            "{{ event.note | default('无') }}|{% if event.note is defined %}y{% else %}n{% endif %}",
        )
        .unwrap();
        assert_eq!(t.render(&context()).unwrap().body, "无|n");
    }

    #[test]
    fn undefined_loop_item_attribute() {
        let t =
            MessageTemplate::compile("t", "s", "{% for r in readings %}{{ r.nam }}{% endfor %}")
                .unwrap();
        match t.render(&context()).unwrap_err() {
            TemplateError::UndefinedVariable { variable, .. } => assert_eq!(variable, "r.nam"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn syntax_error_in_body_reports_line_column_and_reason() {
        let err =
            MessageTemplate::compile("t", "ok {{ a }}", "line one\nline two {{ event.title \n}")
                .unwrap_err();
        match &err {
            TemplateError::Syntax {
                part,
                line,
                column,
                message,
                ..
            } => {
                assert_eq!(*part, TemplatePart::Body);
                assert_eq!(*line, 3);
                assert_eq!(*column, 1);
                assert!(
                    message.contains("expected end of variable block"),
                    "{message}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("template `t`: body line 3, column 1: syntax error:")
        );
    }

    #[test]
    fn syntax_error_in_subject_with_unclosed_block() {
        let err = MessageTemplate::compile("t", "泵站 {% if a %}压力低", "body").unwrap_err();
        match err {
            TemplateError::Syntax {
                part,
                line,
                column,
                message,
                ..
            } => {
                assert_eq!(part, TemplatePart::Subject);
                assert_eq!(line, 1);
                // The parser points at the text left unterminated by the
                // block; columns count characters (byte offset would be 18).
                assert_eq!(column, 14);
                assert!(message.contains("unexpected end of input"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn type_errors_are_render_errors_with_line() {
        let t = MessageTemplate::compile("t", "s", "x\n{{ event.title + 1 }}").unwrap();
        match t.render(&context()).unwrap_err() {
            TemplateError::Render { part, line, .. } => {
                assert_eq!(part, TemplatePart::Body);
                assert_eq!(line, Some(2));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn subject_is_forced_to_one_line() {
        let t = MessageTemplate::compile("t", "{{ a }}\n{{ b }}", "b").unwrap();
        let r = t
            .render(&json!({"a": "泵站\r\n压力低", "b": " PS-03 "}))
            .unwrap();
        assert_eq!(r.subject, "泵站 压力低 PS-03");
    }

    #[test]
    fn context_must_be_an_object() {
        let t = MessageTemplate::compile("t", "s", "b").unwrap();
        assert!(matches!(
            t.render(&json!([1, 2])),
            Err(TemplateError::InvalidContext {
                found: "an array",
                ..
            })
        ));
        assert_eq!(t.render(&JsonValue::Null).unwrap().body, "b");
        assert!(MessageTemplate::compile(" ", "s", "b").is_err());
    }

    #[test]
    fn lists_variables() {
        let t = pump_alarm();
        let vars: Vec<_> = t.variables().into_iter().collect();
        assert_eq!(vars, ["device", "event", "readings"]);
        let paths = t.variable_paths();
        assert!(paths.contains("event.location"));
        assert!(paths.contains("device.name"));
        assert!(!paths.iter().any(|p| p.starts_with("r.")), "{paths:?}");
    }

    #[test]
    fn compiled_template_is_shareable_and_reusable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<MessageTemplate>();
        let t = pump_alarm();
        let t2 = t.clone();
        let handle = std::thread::spawn(move || t2.render(&context()).unwrap());
        let a = t.render(&context()).unwrap();
        assert_eq!(a, handle.join().unwrap());
    }
}
