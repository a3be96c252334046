use serde_json::{Value, json};

use super::*;

const POST_TOPIC: &str = "/sys/a1PK/light-07/thing/event/property/post";

fn input(payload: &Value) -> RuleInput<'_> {
    RuleInput {
        topic: POST_TOPIC,
        product_key: "a1PK",
        device_name: "light-07",
        message_id: Some("msg-42"),
        payload,
        timestamp_ms: 1_700_000_000_123,
        now_ms: 1_700_000_000_999,
    }
}

fn sample() -> Value {
    json!({
        "id": "123",
        "method": "thing.event.property.post",
        "items": {
            "temperature": { "value": 31.5, "time": 1_700_000_000_000_i64 },
            "humidity": { "value": 40 },
            "mode": { "value": "auto" }
        },
        "params": { "Power": 1, "a b": "spaced", "end": 5, "Name": "Lamp", "num": "42", "dec": " 2.5 " },
        "values": [10, 20, 30],
        "flags": [true, false],
        "empty": null,
        "unicode": "日本語テキスト"
    })
}

/// Evaluates `expr` (as the single column `v`) against the sample payload.
fn eval(expr: &str) -> Value {
    let payload = sample();
    eval_with(expr, &payload)
}

fn eval_with(expr: &str, payload: &Value) -> Value {
    let statement = Statement::parse(&format!("SELECT {expr} AS v FROM '#'"))
        .unwrap_or_else(|e| panic!("{expr}: {e}"));
    statement.project(&input(payload)).remove("v").unwrap()
}

/// Whether `condition` holds for the sample payload.
fn holds(condition: &str) -> bool {
    let payload = sample();
    let statement = Statement::parse(&format!("SELECT * FROM '#' WHERE {condition}"))
        .unwrap_or_else(|e| panic!("{condition}: {e}"));
    statement.evaluate_where(&input(&payload))
}

fn parse_err(text: &str) -> ParseError {
    match Statement::parse(text) {
        Ok(_) => panic!("expected a parse error for {text}"),
        Err(e) => e,
    }
}

#[test]
fn example_rule_matches_and_projects() {
    let statement = Statement::parse(
        "SELECT deviceName() AS device, items.temperature.value AS t \
         FROM '/sys/+/+/thing/event/property/post' \
         WHERE items.temperature.value > 30 AND deviceName() LIKE 'light-%'",
    )
    .unwrap();
    let payload = sample();
    let out = statement.evaluate(&input(&payload)).unwrap();
    assert_eq!(Value::Object(out), json!({"device": "light-07", "t": 31.5}));

    let cool = json!({"items": {"temperature": {"value": 25}}});
    assert!(statement.evaluate(&input(&cool)).is_none());

    let mut other = input(&payload);
    other.device_name = "pump-1";
    assert!(statement.evaluate(&other).is_none());

    let mut wrong_topic = input(&payload);
    wrong_topic.topic = "/sys/a1PK/light-07/thing/event/property/post_reply";
    assert!(statement.evaluate(&wrong_topic).is_none());
    assert!(!statement.matches(&wrong_topic));
    assert!(statement.matches(&input(&payload)));
}

#[test]
fn error_positions_and_display() {
    let e = parse_err("SELECT deviceName() AS dev WHERE x = 1");
    assert_eq!((e.line, e.column), (1, 28));
    assert_eq!(
        e.to_string(),
        "line 1, column 28: expected FROM after the select list"
    );

    let e = parse_err("SELECT *\nFROM '/a/+'\nWHERE temperature >");
    assert_eq!((e.line, e.column), (3, 20));
    assert!(e.message.contains("end of the statement"), "{e}");

    let e = parse_err("SELECT a FROM 't' WHERE b = 'open");
    assert_eq!((e.line, e.column), (1, 29));
    assert!(e.message.contains("unterminated string"), "{e}");

    let e = parse_err("  UPDATE x");
    assert_eq!((e.line, e.column), (1, 3));
    assert!(e.message.contains("starts with SELECT"), "{e}");

    let e = parse_err("SELECT a FROM 't' WHERE (a = 1");
    assert!(e.message.contains("expected ')'"), "{e}");
    assert!(e.message.contains("column 25"), "{e}");

    let e = parse_err("SELECT a FROM 't' WHERE a = 1 b");
    assert_eq!(e.column, 31);
    assert!(e.message.contains("after the WHERE condition"), "{e}");

    let e = parse_err("SELECT a FROM 't' LIMIT 1");
    assert!(e.message.contains("expected WHERE or the end"), "{e}");

    let e = parse_err("SELECT a FROM t");
    assert_eq!(e.column, 15);
    assert!(e.message.contains("quoted topic filter"), "{e}");

    let e = parse_err("SELECT a FROM 't' WHERE a ! 1");
    assert_eq!(e.column, 27);

    let e = parse_err("SELECT a FROM 't' WHERE a IS 5");
    assert!(e.message.contains("expected NULL after IS"), "{e}");

    let e = parse_err("SELECT a FROM 't' WHERE a BETWEEN 1 OR 2");
    assert!(e.message.contains("expected AND in BETWEEN"), "{e}");

    let e = parse_err("SELECT a FROM 't' WHERE a IN 1");
    assert!(e.message.contains("expected '(' after IN"), "{e}");

    let e = parse_err("SELECT FROM 't'");
    assert_eq!(e.column, 8);
    assert!(e.message.contains("expected a column before FROM"), "{e}");

    let e = parse_err("SELECT a FROM 't' WHERE select = 1");
    assert!(e.message.contains("keyword SELECT"), "{e}");
    assert!(Statement::parse("SELECT a FROM 't' WHERE \"select\" = 1").is_ok());

    let e = parse_err("SELECT a.'x' FROM 't'");
    assert!(e.message.contains("expected a field name after '.'"), "{e}");
    let e = parse_err("SELECT values[x] AS v FROM 't'");
    assert!(e.message.contains("array index"), "{e}");
    let e = parse_err("SELECT values[-1] AS v FROM 't'");
    assert!(e.message.contains("array index"), "{e}");
    let e = parse_err("SELECT values[0 AS v FROM 't'");
    assert!(e.message.contains("expected ']'"), "{e}");

    let e = parse_err("SELECT 3abc AS v FROM 't'");
    assert!(e.message.contains("must not start with a digit"), "{e}");
    let e = parse_err("SELECT 1e999 AS v FROM 't'");
    assert_eq!(
        e.to_string(),
        "line 1, column 8: the number 1e999 is too large"
    );
    let e = parse_err("SELECT a FROM 't' WHERE a = #");
    assert!(e.message.contains("unexpected character '#'"), "{e}");
    let e = parse_err("SELECT CASE WHEN a THEN 1 AS v FROM 't'");
    assert!(e.message.contains("expected END"), "{e}");
    let e = parse_err("SELECT CASE ELSE 1 END AS v FROM 't'");
    assert!(e.message.contains("expected WHEN"), "{e}");
    let e = parse_err("SELECT CASE WHEN a 1 END AS v FROM 't'");
    assert!(e.message.contains("expected THEN"), "{e}");
}

#[test]
fn columns_need_names_unless_plain_paths() {
    let e = parse_err("SELECT deviceName() FROM 't'");
    assert_eq!(e.column, 8);
    assert!(
        e.message.contains("deviceName() needs a column name"),
        "{e}"
    );
    assert!(e.message.contains("AS"), "{e}");

    let e = parse_err("SELECT a + 1 FROM 't'");
    assert!(
        e.message.contains("this expression needs a column name"),
        "{e}"
    );
    let e = parse_err("SELECT values[0] FROM 't'");
    assert!(
        e.message.contains("array element needs a column name"),
        "{e}"
    );

    let e = parse_err("SELECT a.x, b.x FROM 't'");
    assert_eq!(e.column, 13);
    assert!(e.message.contains("'x' is used twice"), "{e}");

    let e = parse_err("SELECT a AS 5 FROM 't'");
    assert!(e.message.contains("column name after AS"), "{e}");

    let statement = Statement::parse(
        "SELECT items.temperature.value, params.\"a b\", id AS \"the id\" FROM 't'",
    )
    .unwrap();
    assert_eq!(
        statement.column_names().collect::<Vec<_>>(),
        ["value", "a b", "the id"]
    );
    assert!(!statement.selects_all());
}

#[test]
fn unknown_functions_and_arity() {
    let e = parse_err("SELECT a FROM 't' WHERE frobnicate(a) = 1");
    assert_eq!(e.column, 25);
    assert!(e.message.contains("unknown function 'frobnicate'"), "{e}");
    assert!(e.message.contains("deviceName"), "{e}");

    let e = parse_err("SELECT round(a, 1, 2) AS r FROM 't'");
    assert_eq!(e.message, "function round takes 1 or 2 arguments, got 3");
    let e = parse_err("SELECT deviceName(1) AS d FROM 't'");
    assert_eq!(e.message, "function deviceName takes no arguments, got 1");
    let e = parse_err("SELECT concat() AS d FROM 't'");
    assert_eq!(
        e.message,
        "function concat takes at least 1 argument, got 0"
    );
    let e = parse_err("SELECT abs() AS d FROM 't'");
    assert_eq!(e.message, "function abs takes 1 argument, got 0");
    let e = parse_err("SELECT substring('a') AS d FROM 't'");
    assert_eq!(
        e.message,
        "function substring takes 2 or 3 arguments, got 1"
    );
    let e = parse_err("SELECT topic(1, 2) AS d FROM 't'");
    assert!(e.message.contains("function topic takes"), "{e}");
}

#[test]
fn topic_filter_validation() {
    let e = parse_err("SELECT * FROM '/sys/#/post'");
    assert!(e.message.contains("'#' must be the last level"), "{e}");
    assert_eq!(e.column, 21);
    let e = parse_err("SELECT * FROM '/sys/pk+/x'");
    assert!(e.message.contains("whole level"), "{e}");
    assert_eq!(e.column, 21);
    let e = parse_err("SELECT * FROM 'a/b#'");
    assert!(e.message.contains("whole level"), "{e}");
    let e = parse_err("SELECT * FROM ''");
    assert!(e.message.contains("must not be empty"), "{e}");

    let statement = Statement::parse("SELECT * FROM \"/sys/+/+/thing/#\"").unwrap();
    assert_eq!(statement.topic_filter(), "/sys/+/+/thing/#");
}

#[test]
fn topic_matching() {
    let m = |filter: &str, topic: &str| {
        Statement::parse(&format!("SELECT * FROM '{filter}'"))
            .unwrap()
            .matches_topic(topic)
    };
    assert!(m("/sys/+/+/thing/event/property/post", POST_TOPIC));
    assert!(!m(
        "/sys/+/+/thing/event/property/post",
        "/sys/a/b/thing/event/property/post/x"
    ));
    assert!(!m(
        "/sys/+/+/thing/event/property/post",
        "/sys/a/thing/event/property/post"
    ));
    assert!(m("/sys/#", POST_TOPIC));
    assert!(m("/sys/#", "/sys"), "# matches the parent level");
    assert!(m("/sys/a1PK/#", "/sys/a1PK"));
    assert!(!m("/sys/a1PK/#", "/sys/other"));
    assert!(m("#", "anything/at/all"));
    assert!(m("a/+", "a/"), "+ matches an empty level");
    assert!(!m("a/+", "a"));
    assert!(m("+/+", "/x"));
    assert!(m("a/b", "a/b"));
    assert!(!m("a/b", "a/B"), "levels are case-sensitive");
    assert!(!m("a/b", "a/b/"));
    assert!(
        !m("#", "$SYS/broker"),
        "wildcards skip $ topics at the first level"
    );
    assert!(!m("+/broker", "$SYS/broker"));
    assert!(m("$SYS/#", "$SYS/broker"));
}

#[test]
fn literals() {
    assert_eq!(eval("42"), json!(42));
    assert_eq!(eval("-42"), json!(-42));
    assert_eq!(eval("1.5"), json!(1.5));
    assert_eq!(eval("2e3"), json!(2000.0));
    assert_eq!(eval("1.5E-1"), json!(0.15));
    assert_eq!(eval("'it''s'"), json!("it's"));
    assert_eq!(eval("''"), json!(""));
    assert_eq!(eval("TRUE"), json!(true));
    assert_eq!(eval("false"), json!(false));
    assert_eq!(eval("NULL"), Value::Null);
    assert_eq!(eval("99999999999999999999"), json!(1e20));
    assert_eq!(eval("-9223372036854775808"), json!(i64::MIN as f64));
}

#[test]
fn field_paths() {
    assert_eq!(eval("items.temperature.value"), json!(31.5));
    assert_eq!(eval("params.Power"), json!(1));
    assert_eq!(eval("params.\"a b\""), json!("spaced"));
    assert_eq!(eval("params.`a b`"), json!("spaced"));
    assert_eq!(
        eval("params.end"),
        json!(5),
        "keywords are fine after a dot"
    );
    assert_eq!(eval("values[0]"), json!(10));
    assert_eq!(eval("values[2]"), json!(30));
    assert_eq!(eval("values[3]"), Value::Null);
    assert_eq!(eval("items.nope.value"), Value::Null);
    assert_eq!(eval("params.Power.deeper"), Value::Null);
    assert_eq!(eval("items[0]"), Value::Null);
    assert_eq!(eval("values"), json!([10, 20, 30]));
    assert_eq!(eval("items.humidity"), json!({"value": 40}));
    assert_eq!(eval("unicode"), json!("日本語テキスト"));
    let nested = json!({"a": [{"b": [1, {"c": "deep"}]}]});
    assert_eq!(eval_with("a[0].b[1].c", &nested), json!("deep"));
}

#[test]
fn arithmetic() {
    assert_eq!(eval("1 + 2 * 3"), json!(7));
    assert_eq!(eval("(1 + 2) * 3"), json!(9));
    assert_eq!(eval("10 - 4 - 3"), json!(3), "left associative");
    assert_eq!(eval("7 / 2"), json!(3.5));
    assert_eq!(
        eval("8 / 2"),
        json!(4),
        "exact integer division stays integer"
    );
    assert_eq!(eval("7 % 3"), json!(1));
    assert_eq!(eval("-7 % 3"), json!(-1));
    assert_eq!(eval("7.5 % 2"), json!(1.5));
    assert_eq!(eval("1.5 + 1"), json!(2.5));
    assert_eq!(eval("0.5 * 4"), json!(2.0));
    assert_eq!(eval("items.temperature.value * 2"), json!(63.0));
    assert_eq!(eval("params.Power + 1"), json!(2));
    assert_eq!(eval("-params.Power"), json!(-1));
    assert_eq!(eval("-items.temperature.value"), json!(-31.5));
    assert_eq!(eval("- -3"), json!(3));
    assert_eq!(eval("1 / 0"), Value::Null);
    assert_eq!(eval("1.5 / 0"), Value::Null);
    assert_eq!(eval("1 % 0"), Value::Null);
    assert_eq!(eval("1 + NULL"), Value::Null);
    assert_eq!(eval("missing + 1"), Value::Null);
    assert_eq!(eval("'3' + 1"), Value::Null, "strings are not numbers");
    assert_eq!(eval("true + 1"), Value::Null);
    assert_eq!(eval("-'x'"), Value::Null);
    assert_eq!(
        eval("9223372036854775807 + 1"),
        json!(9_223_372_036_854_775_808.0)
    );
    assert_eq!(
        eval("9223372036854775807 * 2"),
        json!(18_446_744_073_709_551_616.0)
    );
    assert_eq!(
        eval("1e308 * 10"),
        Value::Null,
        "overflow to infinity is null"
    );
}

#[test]
fn comparisons() {
    assert!(holds("items.temperature.value > 30"));
    assert!(!holds("items.temperature.value < 30"));
    assert!(holds("items.temperature.value >= 31.5"));
    assert!(holds("items.temperature.value <= 31.5"));
    assert!(holds("params.Power = 1"));
    assert!(
        holds("params.Power = 1.0"),
        "integers and decimals compare numerically"
    );
    assert!(holds("params.Power == 1"));
    assert!(holds("params.Power != 2"));
    assert!(holds("params.Power <> 2"));
    assert!(holds("items.mode.value = 'auto'"));
    assert!(!holds("items.mode.value = 'AUTO'"));
    assert!(holds("'abc' < 'abd'"));
    assert!(holds("'b' > 'abc'"));
    assert!(!holds("params.num = 42"), "no implicit conversion");
    assert!(!holds("params.num > 1"));
    assert!(holds("params.num != 42"), "different types are unequal");
    assert!(holds("to_number(params.num) = 42"));
    assert!(holds("true = true"));
    assert!(!holds("true < false"));
    assert!(holds("values = values"));
    assert!(!holds("values = flags"));
    assert!(
        holds("9007199254740993 > 9007199254740992"),
        "integers compare exactly"
    );
}

#[test]
fn null_semantics() {
    for condition in [
        "missing = 1",
        "missing != 1",
        "missing < 1",
        "missing > 1",
        "missing = missing",
        "NULL = NULL",
        "empty = NULL",
        "missing IN (1, NULL)",
        "missing NOT IN (1, 2)",
        "missing BETWEEN 1 AND 2",
        "missing NOT BETWEEN 1 AND 2",
        "missing LIKE '%'",
        "missing NOT LIKE 'a%'",
        "missing",
        "NULL",
        "missing AND true",
        "missing OR false",
        "missing IS NOT NULL",
    ] {
        assert!(!holds(condition), "{condition} should not hold");
    }
    assert!(holds("missing IS NULL"));
    assert!(holds("empty IS NULL"));
    assert!(holds("items.nope.deeper IS NULL"));
    assert!(holds("params.Power IS NOT NULL"));
    assert!(holds("NOT missing"), "null counts as false");
    assert!(holds("NOT (missing > 1)"));
}

#[test]
fn logic() {
    assert!(holds("true AND true"));
    assert!(!holds("true AND false"));
    assert!(holds("false OR true"));
    assert!(!holds("false OR false"));
    assert!(holds("NOT false"));
    assert!(!holds("NOT true"));
    assert!(holds("NOT NOT true"));
    assert!(
        holds("true OR false AND false"),
        "AND binds tighter than OR"
    );
    assert!(!holds("(true OR false) AND false"));
    assert!(holds("NOT false AND true"), "NOT binds tighter than AND");
    assert!(!holds("1"), "numbers are not conditions");
    assert!(!holds("'true'"));
    // Short-circuit: the right side would be null-propagating arithmetic, still fine.
    assert!(holds("true OR 1 / 0 = 1"));
    assert!(!holds("false AND 1 / 0 IS NULL"));
    assert_eq!(eval("1 < 2"), json!(true));
    assert_eq!(eval("missing > 2"), json!(false));
}

#[test]
fn in_between_like_is() {
    assert!(holds("params.Power IN (0, 1, 2)"));
    assert!(holds("params.Power IN (1.0)"));
    assert!(!holds("params.Power IN (2, 3)"));
    assert!(holds("params.Power NOT IN (2, 3)"));
    assert!(!holds("params.Power NOT IN (1)"));
    assert!(holds("items.mode.value IN ('manual', 'auto')"));
    assert!(
        holds("params.Power IN (params.end - 4)"),
        "list items may be expressions"
    );

    assert!(holds("items.temperature.value BETWEEN 30 AND 32"));
    assert!(holds("items.temperature.value BETWEEN 31.5 AND 31.5"));
    assert!(!holds("items.temperature.value BETWEEN 32 AND 40"));
    assert!(holds("items.temperature.value NOT BETWEEN 32 AND 40"));
    assert!(
        holds("params.Power BETWEEN 0 AND 1 AND true"),
        "BETWEEN's AND is not the logical AND"
    );
    assert!(holds("'m' BETWEEN 'a' AND 'z'"));
    assert!(!holds("'m' BETWEEN 1 AND 2"));

    assert!(holds("deviceName() LIKE 'light-%'"));
    assert!(holds("deviceName() LIKE 'light-__'"));
    assert!(!holds("deviceName() LIKE 'light-_'"));
    assert!(holds("deviceName() LIKE '%07'"));
    assert!(holds("deviceName() LIKE '%ght%'"));
    assert!(holds("deviceName() LIKE 'l%t%0%7'"));
    assert!(holds("deviceName() LIKE 'light-07'"));
    assert!(
        !holds("deviceName() LIKE 'Light-%'"),
        "LIKE is case-sensitive"
    );
    assert!(holds("deviceName() NOT LIKE 'pump%'"));
    assert!(!holds("deviceName() NOT LIKE 'light%'"));
    assert!(holds("unicode LIKE '日本_テ%'"));
    assert!(holds("'' LIKE '%'"));
    assert!(!holds("'' LIKE '_'"));
    assert!(holds("'abc' LIKE '%%c'"));
    assert!(holds("'aXbXc' LIKE '%X%X_'"));
    assert!(!holds("'aXb' LIKE '%X%X%'"));
    assert!(
        !holds("params.Power LIKE '1'"),
        "LIKE applies to strings only"
    );
    assert!(
        holds("deviceName() LIKE concat('light', '-%')"),
        "computed patterns"
    );

    assert!(holds("empty IS NULL AND params.Power IS NOT NULL"));
}

#[test]
fn case_expressions() {
    assert_eq!(
        eval(
            "CASE WHEN items.temperature.value > 35 THEN 'hot' WHEN items.temperature.value > 30 THEN 'warm' ELSE 'ok' END"
        ),
        json!("warm")
    );
    assert_eq!(eval("CASE WHEN false THEN 1 END"), Value::Null);
    assert_eq!(eval("CASE WHEN missing THEN 1 ELSE 2 END"), json!(2));
    assert_eq!(
        eval("case params.Power when 0 then 'off' when 1 then 'on' end"),
        json!("on")
    );
    assert_eq!(
        eval("CASE missing WHEN NULL THEN 'null' ELSE 'else' END"),
        json!("else")
    );
    assert_eq!(
        eval("CASE WHEN true THEN items.humidity END"),
        json!({"value": 40})
    );
}

#[test]
fn context_functions() {
    assert_eq!(eval("timestamp()"), json!(1_700_000_000_123_i64));
    assert_eq!(eval("now()"), json!(1_700_000_000_999_i64));
    assert_eq!(eval("NOW() - timestamp()"), json!(876));
    assert_eq!(eval("deviceName()"), json!("light-07"));
    assert_eq!(eval("DEVICENAME()"), json!("light-07"));
    assert_eq!(eval("productKey()"), json!("a1PK"));
    assert_eq!(eval("messageId()"), json!("msg-42"));
    assert_eq!(eval("topic()"), json!(POST_TOPIC));
    assert_eq!(eval("topic(1)"), json!("sys"));
    assert_eq!(eval("topic(2)"), json!("a1PK"));
    assert_eq!(eval("topic(3)"), json!("light-07"));
    assert_eq!(eval("topic(7)"), json!("post"));
    assert_eq!(eval("topic(8)"), Value::Null);
    assert_eq!(eval("topic(0)"), Value::Null);
    assert_eq!(eval("topic(1 + 1)"), json!("a1PK"));
    assert_eq!(eval("topic('x')"), Value::Null);

    let payload = json!({});
    let statement =
        Statement::parse("SELECT messageId() AS m, topic(1) AS first FROM '#'").unwrap();
    let mut no_id = input(&payload);
    no_id.message_id = None;
    no_id.topic = "city/lamps/7";
    assert_eq!(
        Value::Object(statement.project(&no_id)),
        json!({"m": null, "first": "city"})
    );
}

#[test]
fn numeric_functions() {
    assert_eq!(eval("abs(-3)"), json!(3));
    assert_eq!(eval("abs(-2.5)"), json!(2.5));
    assert_eq!(eval("abs('x')"), Value::Null);
    assert_eq!(
        eval("abs(-9223372036854775807 - 1)"),
        json!(9_223_372_036_854_775_808.0)
    );
    assert_eq!(eval("round(2.5)"), json!(3));
    assert_eq!(eval("round(-2.5)"), json!(-3));
    assert_eq!(eval("round(2.4)"), json!(2));
    assert_eq!(eval("round(7)"), json!(7));
    assert_eq!(eval("round(2.71828, 2)"), json!(2.72));
    assert_eq!(eval("round(31.56, 1)"), json!(31.6));
    assert_eq!(eval("round(1234, -2)"), json!(1200));
    assert_eq!(eval("round(1234, 2)"), json!(1234));
    assert_eq!(eval("round(1.5, 'x')"), Value::Null);
    assert_eq!(eval("round(missing)"), Value::Null);
    assert_eq!(eval("floor(2.7)"), json!(2));
    assert_eq!(eval("floor(-2.1)"), json!(-3));
    assert_eq!(eval("ceil(2.1)"), json!(3));
    assert_eq!(eval("ceil(-2.7)"), json!(-2));
    assert_eq!(eval("ceil(5)"), json!(5));
    assert_eq!(eval("floor(1e300)"), json!(1e300));
    assert_eq!(eval("floor('2.5')"), Value::Null);
}

#[test]
fn string_functions() {
    assert_eq!(eval("lower(params.Name)"), json!("lamp"));
    assert_eq!(eval("upper(params.Name)"), json!("LAMP"));
    assert_eq!(eval("lower(1)"), Value::Null);
    assert_eq!(eval("concat('a', 1, '-', 2.5, true)"), json!("a1-2.5true"));
    assert_eq!(
        eval("concat('a', missing, 'b')"),
        json!("ab"),
        "null arguments are skipped"
    );
    assert_eq!(eval("concat(values)"), json!("[10,20,30]"));
    assert_eq!(eval("substring('streetlight', 6)"), json!("light"));
    assert_eq!(eval("substring('streetlight', 0, 6)"), json!("street"));
    assert_eq!(eval("substring('streetlight', 6, 100)"), json!("light"));
    assert_eq!(eval("substring('abc', 10)"), json!(""));
    assert_eq!(eval("substring('abc', -1)"), Value::Null);
    assert_eq!(eval("substring('abc', 0, -1)"), Value::Null);
    assert_eq!(
        eval("substring(unicode, 2, 2)"),
        json!("語テ"),
        "by character"
    );
    assert_eq!(eval("substring(upper('abc'), 1)"), json!("BC"));
    assert_eq!(eval("substring(5, 1)"), Value::Null);
    assert_eq!(eval("length(params.Name)"), json!(4));
    assert_eq!(eval("length(unicode)"), json!(7));
    assert_eq!(eval("length(values)"), json!(3));
    assert_eq!(eval("length(5)"), Value::Null);
    assert_eq!(eval("coalesce(missing, empty, params.Power, 2)"), json!(1));
    assert_eq!(eval("coalesce(missing, NULL)"), Value::Null);
    assert_eq!(eval("to_number(params.num)"), json!(42));
    assert_eq!(eval("to_number(params.dec)"), json!(2.5));
    assert_eq!(eval("to_number('1e3')"), json!(1000.0));
    assert_eq!(eval("to_number('abc')"), Value::Null);
    assert_eq!(eval("to_number('NaN')"), Value::Null);
    assert_eq!(eval("to_number('inf')"), Value::Null);
    assert_eq!(eval("to_number(7)"), json!(7));
    assert_eq!(eval("to_number(true)"), Value::Null);
    assert_eq!(eval("to_string(42)"), json!("42"));
    assert_eq!(eval("to_string(1.5)"), json!("1.5"));
    assert_eq!(eval("to_string(false)"), json!("false"));
    assert_eq!(eval("to_string('x')"), json!("x"));
    assert_eq!(eval("to_string(missing)"), Value::Null);
    assert_eq!(eval("to_string(items.humidity)"), json!("{\"value\":40}"));
}

#[test]
fn star_projection() {
    let payload = json!({"b": 1, "a": {"x": 2}, "c": "three"});
    let statement = Statement::parse("SELECT * FROM '#'").unwrap();
    assert!(statement.selects_all());
    let out = statement.project(&input(&payload));
    assert_eq!(Value::Object(out.clone()), payload);
    assert_eq!(
        out.keys().collect::<Vec<_>>(),
        ["b", "a", "c"],
        "payload order kept"
    );

    let statement =
        Statement::parse("SELECT deviceName() AS device, *, b * 10 AS b, a.x FROM '#'").unwrap();
    let out = statement.project(&input(&payload));
    assert_eq!(
        out.keys().collect::<Vec<_>>(),
        ["device", "b", "a", "c", "x"]
    );
    assert_eq!(
        Value::Object(out),
        json!({"device": "light-07", "b": 10, "a": {"x": 2}, "c": "three", "x": 2})
    );

    let not_object = json!([1, 2]);
    let statement = Statement::parse("SELECT *, deviceName() AS d FROM '#'").unwrap();
    assert_eq!(
        Value::Object(statement.project(&input(&not_object))),
        json!({"d": "light-07"})
    );
}

#[test]
fn where_absent_or_true_matches() {
    let payload = sample();
    let statement = Statement::parse("SELECT id FROM '/sys/#'").unwrap();
    assert_eq!(
        statement.evaluate(&input(&payload)).map(Value::Object),
        Some(json!({"id": "123"}))
    );
    let statement = Statement::parse("SELECT id FROM '/sys/#' WHERE true").unwrap();
    assert!(statement.evaluate(&input(&payload)).is_some());
    let statement = Statement::parse("SELECT id FROM '/sys/#' WHERE false").unwrap();
    assert!(statement.evaluate(&input(&payload)).is_none());
}

#[test]
fn keywords_are_case_insensitive_and_layout_is_free() {
    let statement = Statement::parse(
        "select  deviceName() as d\n  from '/sys/+/+/thing/event/property/post'\n  where params.Power between 0 and 1 and not missing is not null",
    )
    .unwrap();
    let payload = sample();
    assert!(statement.evaluate(&input(&payload)).is_some());
}

#[test]
fn statement_keeps_source_and_is_shareable() {
    fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
    assert_shareable::<Statement>();
    let text = "SELECT * FROM 'a/b' WHERE x > 1";
    let statement: Statement = text.parse().unwrap();
    assert_eq!(statement.source(), text);
    assert_eq!(statement.to_string(), text);
    let copy = statement.clone();
    assert_eq!(copy.topic_filter(), "a/b");
}
