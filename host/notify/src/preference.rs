//! Per-user channel preferences: which channels a person wants to be reached
//! on, from which severity upwards, and when not to be disturbed.
//!
//! Severity levels run from 1 (most severe, critical) to 4 (least severe).
//! In-app messages are always delivered so nothing is lost; the other
//! channels are filtered by [`Preferences::channels_for`].

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Most severe level; it goes through quiet hours.
pub const CRITICAL_LEVEL: u8 = 1;
/// Least severe level.
pub const LOWEST_LEVEL: u8 = 4;

const MINUTES_PER_DAY: u16 = 24 * 60;

/// A way of reaching a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// E-mail over SMTP.
    Email,
    /// Text message, through an SMS channel plugin.
    Sms,
    /// Instant messaging, through an IM channel plugin.
    Im,
    /// Message in the Lotus web and mobile apps; always delivered.
    InApp,
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChannelKind::Email => "email",
            ChannelKind::Sms => "sms",
            ChannelKind::Im => "im",
            ChannelKind::InApp => "inapp",
        })
    }
}

/// A daily period during which only critical notifications leave the app.
///
/// Times are `HH:MM` on a 24-hour clock in the user's local time. The period
/// may span midnight (`22:00`–`07:00`); `end` is exclusive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuietHours {
    /// Start of the quiet period, `HH:MM`.
    pub start: String,
    /// End of the quiet period (exclusive), `HH:MM`.
    pub end: String,
    /// The user's offset from UTC in minutes (480 for UTC+8). A fixed offset:
    /// daylight-saving changes are not followed, so users in such zones must
    /// update it twice a year. Only used by [`Preferences::local_minute_of_day`].
    #[serde(default)]
    pub utc_offset_minutes: i16,
}

impl QuietHours {
    /// Whether `minute_of_day` (0 = 00:00 local) lies in the quiet period.
    /// Returns `false` if the times are not valid `HH:MM` values.
    pub fn contains(&self, minute_of_day: u16) -> bool {
        let (Some(start), Some(end)) = (parse_clock(&self.start), parse_clock(&self.end)) else {
            return false;
        };
        let m = minute_of_day % MINUTES_PER_DAY;
        if start <= end {
            start <= m && m < end
        } else {
            m >= start || m < end
        }
    }
}

/// Which channels a user wants notifications on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Preferences {
    /// Channels the user enabled. In-app is delivered whether listed or not.
    pub channels: Vec<ChannelKind>,
    /// Least severe level (1..=4) still sent outside the app; `None` sends
    /// every level. Notifications less severe than this are in-app only.
    pub min_level: Option<u8>,
    /// Period during which non-critical notifications stay in the app.
    pub quiet_hours: Option<QuietHours>,
}

impl Default for Preferences {
    /// In-app and e-mail, every level, no quiet hours.
    fn default() -> Self {
        Preferences {
            channels: vec![ChannelKind::InApp, ChannelKind::Email],
            min_level: None,
            quiet_hours: None,
        }
    }
}

/// A preference value that cannot be used; `field` is the JSON path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} {message}")]
pub struct PreferenceError {
    /// JSON path of the offending field, e.g. `quietHours.start`.
    pub field: &'static str,
    /// What is wrong and what is expected.
    pub message: String,
}

impl Preferences {
    /// Checks levels and quiet-hour times; the error names the field.
    pub fn validate(&self) -> Result<(), PreferenceError> {
        if let Some(level) = self.min_level
            && !(CRITICAL_LEVEL..=LOWEST_LEVEL).contains(&level)
        {
            return Err(PreferenceError {
                field: "minLevel",
                message: format!(
                    "must be between {CRITICAL_LEVEL} (critical only) and {LOWEST_LEVEL} (every level), got {level}"
                ),
            });
        }
        if let Some(quiet) = &self.quiet_hours {
            let start = check_clock("quietHours.start", &quiet.start)?;
            let end = check_clock("quietHours.end", &quiet.end)?;
            if start == end {
                return Err(PreferenceError {
                    field: "quietHours.end",
                    message: format!(
                        "must differ from quietHours.start (both are {}); remove quietHours to disable them",
                        quiet.start
                    ),
                });
            }
            // UTC offsets in use range from -12:00 to +14:00.
            if !(-12 * 60..=14 * 60).contains(&quiet.utc_offset_minutes) {
                return Err(PreferenceError {
                    field: "quietHours.utcOffsetMinutes",
                    message: format!(
                        "must be between -720 and 840 minutes (UTC-12:00 to UTC+14:00), got {}",
                        quiet.utc_offset_minutes
                    ),
                });
            }
        }
        Ok(())
    }

    /// Channels to use for a notification of severity `level` (1 most
    /// severe .. 4; `None` = unknown) at `local_minute_of_day` (0..1440,
    /// minutes since local midnight).
    ///
    /// In-app is always first. Any other enabled channel is added, in the
    /// user's order, when the level is at least as severe as `min_level`
    /// (an unknown level only passes when `min_level` is unset) and the time
    /// is outside quiet hours; level 1 ignores quiet hours.
    pub fn channels_for(&self, level: Option<u8>, local_minute_of_day: u16) -> Vec<ChannelKind> {
        let mut out = vec![ChannelKind::InApp];
        let severe_enough = match (self.min_level, level) {
            (None, _) => true,
            (Some(min), Some(level)) => level <= min,
            (Some(_), None) => false,
        };
        if !severe_enough {
            return out;
        }
        let critical = level.is_some_and(|l| l <= CRITICAL_LEVEL);
        let quiet = self
            .quiet_hours
            .as_ref()
            .is_some_and(|q| q.contains(local_minute_of_day));
        if quiet && !critical {
            return out;
        }
        for &channel in &self.channels {
            if !out.contains(&channel) {
                out.push(channel);
            }
        }
        out
    }

    /// The user's local minute of day at `now`, using the quiet hours'
    /// UTC offset (UTC when no quiet hours are set).
    pub fn local_minute_of_day(&self, now: SystemTime) -> u16 {
        let offset = self
            .quiet_hours
            .as_ref()
            .map_or(0, |q| i64::from(q.utc_offset_minutes));
        let minutes = match now.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() / 60) as i64,
            Err(before) => -((before.duration().as_secs() / 60) as i64) - 1,
        };
        (minutes + offset).rem_euclid(i64::from(MINUTES_PER_DAY)) as u16
    }

    /// [`channels_for`](Self::channels_for) at wall-clock time `now`.
    pub fn channels_at(&self, level: Option<u8>, now: SystemTime) -> Vec<ChannelKind> {
        self.channels_for(level, self.local_minute_of_day(now))
    }
}

fn parse_clock(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn check_clock(field: &'static str, value: &str) -> Result<u16, PreferenceError> {
    parse_clock(value).ok_or_else(|| PreferenceError {
        field,
        message: format!(
            "must be HH:MM on a 24-hour clock (00:00 to 23:59, e.g. 22:00), got `{value}`"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChannelKind::*;
    use std::time::Duration;

    fn at(h: u16, m: u16) -> u16 {
        h * 60 + m
    }

    fn night_shift() -> Preferences {
        Preferences {
            channels: vec![Sms, Email, Im],
            min_level: Some(2),
            quiet_hours: Some(QuietHours {
                start: "22:00".into(),
                end: "07:00".into(),
                utc_offset_minutes: 480,
            }),
        }
    }

    #[test]
    fn default_is_in_app_and_email() {
        let p = Preferences::default();
        assert!(p.validate().is_ok());
        assert_eq!(p.channels_for(Some(4), at(3, 0)), [InApp, Email]);
        assert_eq!(p.channels_for(None, at(12, 0)), [InApp, Email]);
    }

    #[test]
    fn in_app_always_first_and_never_duplicated() {
        let p = Preferences {
            channels: vec![Email, InApp, Email],
            ..Preferences::default()
        };
        assert_eq!(p.channels_for(Some(3), 0), [InApp, Email]);
        let none = Preferences {
            channels: vec![],
            ..Preferences::default()
        };
        assert_eq!(none.channels_for(Some(1), 0), [InApp]);
    }

    #[test]
    fn min_level_filters_less_severe_notifications() {
        let p = Preferences {
            quiet_hours: None,
            ..night_shift()
        };
        assert_eq!(p.channels_for(Some(1), at(12, 0)), [InApp, Sms, Email, Im]);
        assert_eq!(p.channels_for(Some(2), at(12, 0)), [InApp, Sms, Email, Im]);
        assert_eq!(p.channels_for(Some(3), at(12, 0)), [InApp]);
        assert_eq!(p.channels_for(Some(4), at(12, 0)), [InApp]);
        assert_eq!(p.channels_for(None, at(12, 0)), [InApp]);
    }

    #[test]
    fn quiet_hours_spanning_midnight() {
        let p = night_shift();
        // Inside: only critical leaves the app.
        for minute in [at(22, 0), at(23, 59), at(0, 0), at(3, 30), at(6, 59)] {
            assert_eq!(p.channels_for(Some(2), minute), [InApp], "minute {minute}");
            assert_eq!(
                p.channels_for(Some(1), minute),
                [InApp, Sms, Email, Im],
                "minute {minute}"
            );
        }
        // Outside: end is exclusive, start inclusive.
        for minute in [at(7, 0), at(12, 0), at(21, 59)] {
            assert_eq!(
                p.channels_for(Some(2), minute),
                [InApp, Sms, Email, Im],
                "minute {minute}"
            );
        }
    }

    #[test]
    fn quiet_hours_within_one_day() {
        let q = QuietHours {
            start: "12:30".into(),
            end: "14:00".into(),
            utc_offset_minutes: 0,
        };
        assert!(!q.contains(at(12, 29)));
        assert!(q.contains(at(12, 30)));
        assert!(q.contains(at(13, 59)));
        assert!(!q.contains(at(14, 0)));
        // Out-of-range minutes wrap instead of panicking.
        assert!(q.contains(at(12, 30) + 1440));
    }

    #[test]
    fn validation_names_the_field() {
        let mut p = night_shift();
        p.quiet_hours.as_mut().unwrap().start = "25:00".into();
        let err = p.validate().unwrap_err();
        assert_eq!(err.field, "quietHours.start");
        assert!(
            err.to_string()
                .starts_with("quietHours.start must be HH:MM"),
            "{err}"
        );

        for bad in ["7:00", "07:60", "07-00", "0700", "07:0a", ""] {
            let mut p = night_shift();
            p.quiet_hours.as_mut().unwrap().end = bad.into();
            let err = p.validate().unwrap_err();
            assert_eq!(err.field, "quietHours.end", "{bad}");
            assert!(err.message.contains(&format!("got `{bad}`")), "{err}");
        }

        let mut p = night_shift();
        p.quiet_hours.as_mut().unwrap().end = "22:00".into();
        assert_eq!(p.validate().unwrap_err().field, "quietHours.end");

        let mut p = night_shift();
        p.min_level = Some(0);
        assert_eq!(p.validate().unwrap_err().field, "minLevel");
        p.min_level = Some(5);
        assert!(p.validate().unwrap_err().to_string().contains("got 5"));

        let mut p = night_shift();
        p.quiet_hours.as_mut().unwrap().utc_offset_minutes = 900;
        assert_eq!(
            p.validate().unwrap_err().field,
            "quietHours.utcOffsetMinutes"
        );

        assert!(night_shift().validate().is_ok());
    }

    #[test]
    fn serde_uses_camel_case_and_lowercase_channels() {
        let json = serde_json::json!({
            "channels": ["sms", "email", "im", "inapp"],
            "minLevel": 2,
            "quietHours": {"start": "22:00", "end": "07:00", "utcOffsetMinutes": 480}
        });
        let p: Preferences = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(p.channels, [Sms, Email, Im, InApp]);
        assert_eq!(serde_json::to_value(&p).unwrap(), json);
        // Missing fields fall back to the defaults.
        let p: Preferences = serde_json::from_value(serde_json::json!({"minLevel": 3})).unwrap();
        assert_eq!(p.channels, [InApp, Email]);
        assert!(
            serde_json::from_value::<Preferences>(serde_json::json!({"channels": ["fax"]}))
                .is_err()
        );
    }

    #[test]
    fn local_minute_applies_utc_offset() {
        let p = night_shift(); // UTC+8
        // 1970-01-02 15:30 UTC = 23:30 at UTC+8, inside quiet hours.
        let now = UNIX_EPOCH + Duration::from_secs(86_400 + 15 * 3600 + 30 * 60);
        assert_eq!(p.local_minute_of_day(now), at(23, 30));
        assert_eq!(p.channels_at(Some(2), now), [InApp]);
        assert_eq!(Preferences::default().local_minute_of_day(now), at(15, 30));
        let mut west = night_shift();
        west.quiet_hours.as_mut().unwrap().utc_offset_minutes = -300;
        assert_eq!(west.local_minute_of_day(now), at(10, 30));
    }
}
