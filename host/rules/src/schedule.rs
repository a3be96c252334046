//! Cron schedules evaluated in a time zone.
//!
//! Two forms are accepted:
//!
//! - Standard 5-field cron, `minute hour day-of-month month day-of-week`, with the usual
//!   meaning: day-of-week `0`–`7` where both `0` and `7` are Sunday (names such as `MON` work
//!   too), and when both day-of-month and day-of-week are restricted (neither starts with
//!   `*`), a day matches if *either* matches, as in classic cron: `0 8 1 * MON` runs on the
//!   1st of each month and on every Monday. Seconds are 0.
//! - The 6- or 7-field form of the `cron` crate: `second minute hour day-of-month month
//!   day-of-week [year]`, taken as is. Here day-of-week numbers run `1`–`7` from *Sunday*
//!   (`1` is Sunday, `2` Monday); prefer names (`Mon-Fri`) to avoid confusion, and both day
//!   fields must match.
//!
//! Times are wall-clock times in the schedule's IANA time zone. Around daylight-saving
//! changes:
//!
//! - a wall-clock time that does not exist (skipped when clocks go forward) fires shifted
//!   forward by the length of the gap: in Europe/Berlin, `30 2 * * *` fires at 03:30 CEST on
//!   the last Sunday of March;
//! - a wall-clock time that occurs twice (clocks go back) fires once, at its first
//!   occurrence.

use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// Why a schedule could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The time zone is not an IANA name.
    #[error(
        "unknown time zone '{name}': use an IANA time zone name such as 'Asia/Shanghai' or 'Europe/Berlin'{}",
        suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default()
    )]
    TimeZone {
        /// The name as given.
        name: String,
        /// A known zone spelled the same apart from letter case.
        suggestion: Option<String>,
    },
    /// The expression does not have 5, 6 or 7 fields.
    #[error(
        "cron expression '{expression}' has {count} fields; write 5 fields (minute hour day-of-month month day-of-week, e.g. '0 8 * * 1-5' for 08:00 on weekdays) or 6-7 fields (second minute hour day-of-month month day-of-week [year], e.g. '0 0 8 * * Mon-Fri')"
    )]
    FieldCount {
        /// The expression as given.
        expression: String,
        /// How many whitespace-separated fields it has.
        count: usize,
    },
    /// A field of the expression is invalid.
    #[error("invalid cron expression '{expression}': {reason}")]
    Expression {
        /// The expression as given.
        expression: String,
        /// What is wrong.
        reason: String,
    },
    /// The expression is valid but matches no date at all.
    #[error(
        "cron expression '{expression}' never fires: no date matches its day, month and year fields (e.g. 30 February)"
    )]
    NeverFires {
        /// The expression as given.
        expression: String,
    },
}

/// A cron schedule in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    time_zone: Tz,
    /// The schedule fires whenever any of these fires: a 5-field expression restricting both
    /// day fields becomes one schedule per day field, because the cron crate ANDs them.
    variants: Vec<cron::Schedule>,
}

impl Schedule {
    /// Parses a 5-, 6- or 7-field cron expression to run in the IANA `time_zone`.
    pub fn parse(expr: &str, time_zone: &str) -> Result<Schedule, ScheduleError> {
        let zone = parse_time_zone(time_zone)?;
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let invalid = |reason: String| ScheduleError::Expression {
            expression: expr.to_owned(),
            reason,
        };
        let sources = match fields.as_slice() {
            [minute, hour, day, month, weekday] => {
                let unix_weekday = unix_day_of_week(weekday).map_err(invalid)?;
                let restricted = |f: &str| !f.starts_with('*') && f != "?";
                if restricted(day) && restricted(weekday) {
                    vec![
                        format!("0 {minute} {hour} {day} {month} *"),
                        format!("0 {minute} {hour} * {month} {unix_weekday}"),
                    ]
                } else {
                    vec![format!("0 {minute} {hour} {day} {month} {unix_weekday}")]
                }
            }
            [_, _, _, _, _, _] | [_, _, _, _, _, _, _] => vec![fields.join(" ")],
            _ => {
                return Err(ScheduleError::FieldCount {
                    expression: expr.to_owned(),
                    count: fields.len(),
                });
            }
        };
        let standard = fields.len() == 5;
        let variants = sources
            .iter()
            .map(|source| {
                cron::Schedule::from_str(source)
                    .map_err(|e| invalid(explain_invalid(source, standard, &e.to_string())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let schedule = Schedule {
            expression: expr.to_owned(),
            time_zone: zone,
            variants,
        };
        if schedule.next_after(DateTime::UNIX_EPOCH).is_none() {
            return Err(ScheduleError::NeverFires {
                expression: expr.to_owned(),
            });
        }
        Ok(schedule)
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone the expression is read in.
    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// The first firing strictly after `after`; `None` when the schedule has ended (a year
    /// field in the past) or lies beyond the years the cron crate supports.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.variants
            .iter()
            .filter_map(|variant| self.next_of(variant, after))
            .min()
    }

    /// The next `n` firings after `after`, in order.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut times = Vec::with_capacity(n.min(1024));
        let mut last = after;
        while times.len() < n {
            match self.next_after(last) {
                Some(next) => {
                    times.push(next);
                    last = next;
                }
                None => break,
            }
        }
        times
    }

    fn next_of(&self, variant: &cron::Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // The cron crate walks wall-clock times; walking them in UTC (which has no DST) and
        // mapping each to an instant here gives the gap and overlap rules in the module docs.
        let wall = after.with_timezone(&self.time_zone).naive_local().and_utc();
        variant
            .after(&wall)
            .map(|wall| self.instant(wall.naive_utc()))
            // Skips first occurrences earlier than `after` when `after` lies in a repeated hour.
            .find(|instant| *instant > after)
    }

    fn instant(&self, wall: NaiveDateTime) -> DateTime<Utc> {
        match self.time_zone.from_local_datetime(&wall) {
            LocalResult::Single(t) => t.to_utc(),
            LocalResult::Ambiguous(first, _) => first.to_utc(),
            LocalResult::None => {
                // Read the skipped time with the offset in force before the gap, which moves
                // it forward by the gap's length.
                let before = self
                    .time_zone
                    .offset_from_utc_datetime(&(wall - TimeDelta::days(1)))
                    .fix();
                (wall - TimeDelta::seconds(i64::from(before.local_minus_utc()))).and_utc()
            }
        }
    }
}

/// Finds the field the cron crate rejects by checking each field alone, so that the message
/// names it in the user's terms instead of quoting the crate's rewritten expression.
fn explain_invalid(source: &str, standard: bool, crate_message: &str) -> String {
    let weekdays = if standard {
        "0-7 (0 and 7 are Sunday) or SUN-SAT"
    } else {
        "1-7 (1 is Sunday) or SUN-SAT"
    };
    let fields: Vec<&str> = source.split_whitespace().collect();
    let roles = [
        ("second", "0-59"),
        ("minute", "0-59"),
        ("hour", "0-23"),
        ("day-of-month", "1-31"),
        ("month", "1-12 or JAN-DEC"),
        ("day-of-week", weekdays),
        ("year", "1970-2100"),
    ];
    for (index, (value, (role, allowed))) in fields.iter().zip(roles).enumerate() {
        let probe: Vec<&str> = (0..fields.len())
            .map(|other| if other == index { *value } else { "*" })
            .collect();
        if cron::Schedule::from_str(&probe.join(" ")).is_err() {
            return format!(
                "the {role} field '{value}' is not valid; allowed: {allowed}, as a single value, a list (a,b), a range (a-b) or a step (*/n, a-b/n)"
            );
        }
    }
    // The crate's message spans several lines (expression, caret, reason); the reason is last.
    crate_message
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or(crate_message)
        .trim()
        .to_owned()
}

fn parse_time_zone(name: &str) -> Result<Tz, ScheduleError> {
    let trimmed = name.trim();
    Tz::from_str(trimmed).map_err(|_| ScheduleError::TimeZone {
        name: name.to_owned(),
        suggestion: chrono_tz::TZ_VARIANTS
            .iter()
            .find(|tz| tz.name().eq_ignore_ascii_case(trimmed))
            .map(|tz| tz.name().to_owned()),
    })
}

/// Rewrites a standard day-of-week field (0–7, Sunday = 0 or 7) into the cron crate's
/// numbering (1–7, Sunday = 1). Items written with names pass through unchanged, since names
/// mean the same in both.
fn unix_day_of_week(field: &str) -> Result<String, String> {
    let mut items = Vec::new();
    let mut days = std::collections::BTreeSet::new();
    for item in field.split(',') {
        if item.chars().any(|c| c.is_ascii_alphabetic()) {
            items.push(item.to_owned());
            continue;
        }
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => {
                let step: u32 = step.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("day-of-week step '{step}' must be a positive number")
                })?;
                (base, Some(step))
            }
            None => (item, None),
        };
        let day = |text: &str| -> Result<u32, String> {
            text.parse::<u32>().ok().filter(|d| *d <= 7).ok_or_else(|| {
                format!(
                    "day of week '{text}' is not valid: use 0-7 (0 and 7 are Sunday) or names such as MON-FRI"
                )
            })
        };
        let (low, high) = match base {
            "*" | "?" => (0, 6),
            _ => match base.split_once('-') {
                Some((low, high)) => (day(low)?, day(high)?),
                None => {
                    let single = day(base)?;
                    // `a/step` runs from `a` to the end of the week.
                    (single, if step.is_some() { 6 } else { single })
                }
            },
        };
        if low > high {
            return Err(format!(
                "day-of-week range '{base}' goes backwards; write the lower day first, e.g. 1-5"
            ));
        }
        if base == "*" && step.is_none() {
            return Ok("*".into());
        }
        days.extend(
            (low..=high)
                .step_by(step.unwrap_or(1) as usize)
                .map(|d| d % 7 + 1),
        );
    }
    items.extend(days.iter().map(u32::to_string));
    if items.is_empty() {
        return Err("the day-of-week field is empty".into());
    }
    Ok(items.join(","))
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, Weekday};

    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn next(expr: &str, zone: &str, after: &str) -> DateTime<Utc> {
        Schedule::parse(expr, zone)
            .unwrap()
            .next_after(utc(after))
            .unwrap()
    }

    fn upcoming(expr: &str, zone: &str, after: &str, n: usize) -> Vec<DateTime<Utc>> {
        Schedule::parse(expr, zone).unwrap().upcoming(utc(after), n)
    }

    #[test]
    fn weekday_mornings_in_shanghai() {
        let schedule = Schedule::parse("0 8 * * 1-5", "Asia/Shanghai").unwrap();
        assert_eq!(schedule.expression(), "0 8 * * 1-5");
        assert_eq!(schedule.time_zone(), chrono_tz::Asia::Shanghai);
        // 2024-01-05 is a Friday; 08:00 in Shanghai is 00:00 UTC, and "after" is exclusive.
        assert_eq!(
            schedule.upcoming(utc("2024-01-05T00:00:00Z"), 4),
            [
                utc("2024-01-08T00:00:00Z"),
                utc("2024-01-09T00:00:00Z"),
                utc("2024-01-10T00:00:00Z"),
                utc("2024-01-11T00:00:00Z"),
            ]
        );
        assert_eq!(
            schedule.next_after(utc("2024-01-04T23:59:59.500Z")),
            Some(utc("2024-01-05T00:00:00Z"))
        );
    }

    #[test]
    fn standard_day_of_week_numbers() {
        let day = |expr: &str| {
            next(expr, "UTC", "2024-01-01T12:00:00Z")
                .with_timezone(&Utc)
                .weekday()
        };
        assert_eq!(day("0 9 * * 0"), Weekday::Sun);
        assert_eq!(day("0 9 * * 7"), Weekday::Sun);
        assert_eq!(day("0 9 * * 1"), Weekday::Mon);
        assert_eq!(
            next("0 9 * * 1", "UTC", "2024-01-01T12:00:00Z"),
            utc("2024-01-08T09:00:00Z"),
            "2024-01-01 is a Monday, already past 09:00"
        );
        assert_eq!(day("0 9 * * 6"), Weekday::Sat);
        assert_eq!(day("0 9 * * SAT"), Weekday::Sat);
        assert_eq!(day("0 9 * * sun,3"), Weekday::Wed);
        let weekend = upcoming("0 9 * * 6-7", "UTC", "2024-01-01T00:00:00Z", 3);
        assert_eq!(
            weekend.iter().map(|t| t.weekday()).collect::<Vec<_>>(),
            [Weekday::Sat, Weekday::Sun, Weekday::Sat]
        );
        let every_other = upcoming("0 9 * * 1/2", "UTC", "2024-01-01T00:00:00Z", 4);
        assert_eq!(
            every_other.iter().map(|t| t.weekday()).collect::<Vec<_>>(),
            [Weekday::Mon, Weekday::Wed, Weekday::Fri, Weekday::Mon]
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_as_in_classic_cron() {
        // The 1st of the month, and every Monday.
        assert_eq!(
            upcoming("0 8 1 * 1", "UTC", "2024-01-23T00:00:00Z", 3),
            [
                utc("2024-01-29T08:00:00Z"),
                utc("2024-02-01T08:00:00Z"),
                utc("2024-02-05T08:00:00Z"),
            ]
        );
        // With one of them unrestricted only the other applies.
        assert_eq!(
            upcoming("0 8 1 * *", "UTC", "2024-01-23T00:00:00Z", 2),
            [utc("2024-02-01T08:00:00Z"), utc("2024-03-01T08:00:00Z")]
        );
    }

    #[test]
    fn steps_and_lists() {
        assert_eq!(
            upcoming("*/15 * * * *", "UTC", "2024-01-01T10:07:00Z", 3),
            [
                utc("2024-01-01T10:15:00Z"),
                utc("2024-01-01T10:30:00Z"),
                utc("2024-01-01T10:45:00Z"),
            ]
        );
        assert_eq!(
            upcoming("0 6,18 * * *", "Asia/Shanghai", "2024-01-01T00:00:00Z", 2),
            [utc("2024-01-01T10:00:00Z"), utc("2024-01-01T22:00:00Z")]
        );
    }

    #[test]
    fn six_and_seven_field_forms() {
        assert_eq!(
            next(
                "30 0 9 * * Mon-Fri",
                "Asia/Shanghai",
                "2024-01-06T00:00:00Z"
            ),
            utc("2024-01-08T01:00:30Z")
        );
        // The cron crate counts weekdays from Sunday = 1.
        assert_eq!(
            next("0 0 9 * * 2", "UTC", "2024-01-02T00:00:00Z").weekday(),
            Weekday::Mon
        );
        let once = Schedule::parse("0 0 12 1 6 * 2030", "Europe/Berlin").unwrap();
        assert_eq!(
            once.next_after(utc("2024-01-01T00:00:00Z")),
            Some(utc("2030-06-01T10:00:00Z"))
        );
        assert_eq!(once.next_after(utc("2030-06-01T10:00:00Z")), None);
        assert_eq!(once.upcoming(utc("2024-01-01T00:00:00Z"), 5).len(), 1);
    }

    #[test]
    fn berlin_spring_forward() {
        // 2024-03-31: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist and moves to 03:30.
        assert_eq!(
            upcoming("30 2 * * *", "Europe/Berlin", "2024-03-30T12:00:00Z", 2),
            [utc("2024-03-31T01:30:00Z"), utc("2024-04-01T00:30:00Z")]
        );
        // A fixed local time keeps its wall-clock time across the change.
        assert_eq!(
            upcoming("0 9 * * *", "Europe/Berlin", "2024-03-30T00:00:00Z", 2),
            [utc("2024-03-30T08:00:00Z"), utc("2024-03-31T07:00:00Z")]
        );
        // Intervals stay in order through the gap.
        assert_eq!(
            upcoming("*/30 * * * *", "Europe/Berlin", "2024-03-31T00:40:00Z", 3),
            [
                utc("2024-03-31T01:00:00Z"),
                utc("2024-03-31T01:30:00Z"),
                utc("2024-03-31T02:00:00Z"),
            ]
        );
    }

    #[test]
    fn berlin_fall_back() {
        // 2024-10-27: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice and fires once.
        assert_eq!(
            upcoming("30 2 * * *", "Europe/Berlin", "2024-10-26T12:00:00Z", 2),
            [utc("2024-10-27T00:30:00Z"), utc("2024-10-28T01:30:00Z")]
        );
        // Starting inside the repeated hour does not fire the repeated time again.
        assert_eq!(
            next("30 2 * * *", "Europe/Berlin", "2024-10-27T01:00:00Z"),
            utc("2024-10-28T01:30:00Z")
        );
        assert_eq!(
            upcoming("0 9 * * *", "Europe/Berlin", "2024-10-26T00:00:00Z", 2),
            [utc("2024-10-26T07:00:00Z"), utc("2024-10-27T08:00:00Z")]
        );
        let quarter_hours = upcoming("*/15 * * * *", "Europe/Berlin", "2024-10-27T00:40:00Z", 3);
        assert_eq!(
            quarter_hours,
            [
                utc("2024-10-27T00:45:00Z"),
                utc("2024-10-27T02:00:00Z"),
                utc("2024-10-27T02:15:00Z"),
            ]
        );
        assert!(quarter_hours.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn errors_name_the_problem() {
        let zone = Schedule::parse("0 8 * * *", "Mars/Olympus").unwrap_err();
        assert!(matches!(zone, ScheduleError::TimeZone { .. }));
        let message = zone.to_string();
        assert!(message.contains("'Mars/Olympus'"), "{message}");
        assert!(message.contains("Asia/Shanghai"), "{message}");
        assert!(!message.contains("did you mean"), "{message}");

        let message = Schedule::parse("0 8 * * *", "asia/shanghai")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("did you mean 'Asia/Shanghai'"),
            "{message}"
        );

        let count = Schedule::parse("0 8 * *", "UTC").unwrap_err();
        assert_eq!(
            count,
            ScheduleError::FieldCount {
                expression: "0 8 * *".into(),
                count: 4
            }
        );
        assert!(count.to_string().contains("e.g. '0 8 * * 1-5'"));

        let field = Schedule::parse("0 25 * * *", "UTC").unwrap_err();
        assert!(matches!(field, ScheduleError::Expression { .. }), "{field}");
        assert_eq!(
            field.to_string(),
            "invalid cron expression '0 25 * * *': the hour field '25' is not valid; allowed: 0-23, as a single value, a list (a,b), a range (a-b) or a step (*/n, a-b/n)"
        );
        let month = Schedule::parse("0 0 8 1 Foo *", "UTC")
            .unwrap_err()
            .to_string();
        assert!(month.contains("the month field 'Foo'"), "{month}");
        let weekday = Schedule::parse("0 8 * * Funday", "UTC")
            .unwrap_err()
            .to_string();
        assert!(weekday.contains("day-of-week field 'Funday'"), "{weekday}");
        assert!(weekday.contains("0 and 7 are Sunday"), "{weekday}");

        let weekday = Schedule::parse("0 8 * * 9", "UTC").unwrap_err().to_string();
        assert!(weekday.contains("day of week '9'"), "{weekday}");
        assert!(weekday.contains("0-7"), "{weekday}");
        let backwards = Schedule::parse("0 8 * * 5-1", "UTC")
            .unwrap_err()
            .to_string();
        assert!(backwards.contains("goes backwards"), "{backwards}");
        let step = Schedule::parse("0 8 * * */0", "UTC")
            .unwrap_err()
            .to_string();
        assert!(step.contains("positive"), "{step}");

        let never = Schedule::parse("0 0 30 2 *", "UTC").unwrap_err();
        assert!(matches!(never, ScheduleError::NeverFires { .. }));
        assert!(never.to_string().contains("never fires"));
    }
}
