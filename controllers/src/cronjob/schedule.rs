//! Cron schedules as upstream parses them (`cron.ParseStandard` of github.com/robfig/cron/v3,
//! which the CronJob controller and API validation use). Written here rather than taken from a
//! crate because the crates at hand (`cron`, `croner`) differ from robfig in ways users would
//! see: `cron` wants a seconds field, `croner` lets `7` mean Sunday and treats `*/1` like `*`
//! in the day-of-month/day-of-week rule. robfig's rules, kept here:
//!
//! - five fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or `JAN`-`DEC`),
//!   day of week (0-6 or `SUN`-`SAT`, Sunday is 0 only); names are case-insensitive;
//! - each field a comma list of `*`/`?`, `N`, `N-M`, each optionally `/step` (`N/step` runs to
//!   the field's maximum);
//! - day of month and day of week: when either is a plain `*` (or `?`, or `*/1`) both must
//!   match, otherwise either may (the classic cron OR rule);
//! - the descriptors `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`,
//!   `@hourly`, and `@every <duration>` (robfig's ConstantDelaySchedule);
//! - times are wall-clock times of the CronJob's `timeZone`: a time a DST change skips never
//!   runs that day, one it repeats runs twice.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// A schedule that cannot be parsed, with robfig's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    values: BTreeSet<u32>,
    /// A bare `*` (robfig's starBit), for the day-of-month/day-of-week rule.
    star: bool,
}

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Cron {
        minute: BTreeSet<u32>,
        hour: BTreeSet<u32>,
        dom: DayField,
        month: BTreeSet<u32>,
        dow: DayField,
    },
    /// `@every <duration>`: fixed intervals from the previous time.
    Every(Duration),
}

/// A day field (values and whether it was a bare `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayField {
    values: BTreeSet<u32>,
    star: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// robfig gives up looking after five years (a schedule like `0 0 30 2 *` never fires).
const SEARCH_YEARS: i64 = 5;

fn parse_int(s: &str, names: Option<(&[&str], u32)>) -> Result<u32, ParseError> {
    if let Some((names, base)) = names {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + base);
        }
    }
    s.parse::<u32>()
        .map_err(|_| ParseError(format!("failed to parse int from {s}: invalid syntax")))
}

fn parse_field(
    spec: &str,
    min: u32,
    max: u32,
    names: Option<(&[&str], u32)>,
) -> Result<Field, ParseError> {
    let mut out = Field {
        values: BTreeSet::new(),
        star: false,
    };
    for expr in spec.split(',') {
        let parts: Vec<&str> = expr.split('/').collect();
        if parts.len() > 2 {
            return Err(ParseError(format!("too many slashes: {expr}")));
        }
        let bounds: Vec<&str> = parts[0].split('-').collect();
        if bounds.len() > 2 {
            return Err(ParseError(format!("too many hyphens: {expr}")));
        }
        let mut star = false;
        let (start, mut end) = if bounds[0] == "*" || bounds[0] == "?" {
            if bounds.len() > 1 {
                return Err(ParseError(format!(
                    "failed to parse int from {}: invalid syntax",
                    parts[0]
                )));
            }
            star = true;
            (min, max)
        } else {
            let start = parse_int(bounds[0], names)?;
            let end = match bounds.get(1) {
                Some(e) => parse_int(e, names)?,
                None => start,
            };
            (start, end)
        };
        let mut step = 1;
        if let Some(s) = parts.get(1) {
            step = parse_int(s, None)?;
            if step == 0 {
                return Err(ParseError(format!(
                    "step of range should be a positive number: {expr}"
                )));
            }
            // `N/step` runs to the maximum.
            if bounds.len() == 1 && !star {
                end = max;
            }
            if step > 1 {
                star = false;
            }
        }
        if start < min {
            return Err(ParseError(format!(
                "beginning of range ({start}) below minimum ({min}): {expr}"
            )));
        }
        if end > max {
            return Err(ParseError(format!(
                "end of range ({end}) above maximum ({max}): {expr}"
            )));
        }
        if start > end {
            return Err(ParseError(format!(
                "beginning of range ({start}) beyond end of range ({end}): {expr}"
            )));
        }
        out.values.extend((start..=end).step_by(step as usize));
        out.star |= star;
    }
    Ok(out)
}

impl Schedule {
    /// Parses a standard cron spec or descriptor.
    pub fn parse(spec: &str) -> Result<Schedule, ParseError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(ParseError("empty spec string".into()));
        }
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            return Err(ParseError(
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into(),
            ));
        }
        let expanded = match spec {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with("@every ") => {
                let d = machinery::duration::parse(s["@every ".len()..].trim())
                    .ok_or_else(|| ParseError(format!("failed to parse duration {s}")))?;
                // Rounded down to whole seconds, at least one (robfig's `Every`).
                let secs = d.as_secs().max(1);
                return Ok(Schedule::Every(Duration::from_secs(secs)));
            }
            s if s.starts_with('@') => {
                return Err(ParseError(format!("unrecognized descriptor: {s}")))
            }
            s => s,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(ParseError(format!(
                "expected exactly 5 fields, found {}: {spec}",
                fields.len()
            )));
        }
        let minute = parse_field(fields[0], 0, 59, None)?.values;
        let hour = parse_field(fields[1], 0, 23, None)?.values;
        let dom = parse_field(fields[2], 1, 31, None)?;
        let month = parse_field(fields[3], 1, 12, Some((&MONTHS, 1)))?.values;
        let dow = parse_field(fields[4], 0, 6, Some((&DAYS, 0)))?;
        Ok(Schedule::Cron {
            minute,
            hour,
            dom: DayField {
                values: dom.values,
                star: dom.star,
            },
            month,
            dow: DayField {
                values: dow.values,
                star: dow.star,
            },
        })
    }

    fn day_matches(&self, d: NaiveDate) -> bool {
        let Schedule::Cron {
            dom, month, dow, ..
        } = self
        else {
            return true;
        };
        if !month.contains(&d.month()) {
            return false;
        }
        let dom_ok = dom.values.contains(&d.day());
        let dow_ok = dow.values.contains(&d.weekday().num_days_from_sunday());
        if dom.star || dow.star {
            dom_ok && dow_ok
        } else {
            dom_ok || dow_ok
        }
    }

    /// The first activation strictly after `after`, in time zone `tz`; `None` when there is none
    /// within five years.
    pub fn next(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let (minutes, hours) = match self {
            Schedule::Every(d) => {
                // robfig: the previous time with its sub-second part dropped, plus the interval.
                let base = after.with_nanosecond(0)?;
                return Some(base + chrono::Duration::from_std(*d).ok()?);
            }
            Schedule::Cron { minute, hour, .. } => (minute, hour),
        };
        // Activations are on whole minutes.
        let start = after.with_second(0)?.with_nanosecond(0)? + chrono::Duration::minutes(1);
        let first_day = start.with_timezone(&tz).date_naive() - chrono::Duration::days(1);
        let last_day = first_day + chrono::Duration::days(366 * SEARCH_YEARS);
        let mut day = first_day;
        while day <= last_day {
            if self.day_matches(day) {
                let mut best: Option<DateTime<Utc>> = None;
                'day: for h in hours {
                    for m in minutes {
                        let local = day.and_hms_opt(*h, *m, 0)?;
                        let instants: Vec<DateTime<Utc>> = match tz.from_local_datetime(&local) {
                            chrono::LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
                            chrono::LocalResult::Ambiguous(a, b) => {
                                vec![a.with_timezone(&Utc), b.with_timezone(&Utc)]
                            }
                            chrono::LocalResult::None => vec![],
                        };
                        // The earliest instant of a wall time only grows with the wall time,
                        // so once it passes the best candidate nothing later can beat it.
                        if let (Some(b), Some(first)) = (best, instants.iter().min()) {
                            if *first > b {
                                break 'day;
                            }
                        }
                        for t in instants.into_iter().filter(|t| *t >= start) {
                            best = Some(best.map_or(t, |b| b.min(t)));
                        }
                    }
                }
                if best.is_some() {
                    return best;
                }
            }
            day = day.succ_opt()?;
        }
        None
    }
}

/// The most recent activation at or before `now` that the controller has not yet acted on,
/// and how many were missed (upstream's `mostRecentScheduleTime`). `earliest` is the last
/// schedule time (or the CronJob's creation, or `now - startingDeadlineSeconds` when later).
/// Like upstream, the count for many misses is estimated from the interval between two
/// consecutive activations rather than by walking every one.
pub fn most_recent(
    schedule: &Schedule,
    tz: Tz,
    earliest: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(Option<DateTime<Utc>>, i64), ParseError> {
    let Some(t1) = schedule.next(earliest, tz) else {
        return Ok((None, 0));
    };
    if now < t1 {
        return Ok((None, 0));
    }
    let Some(t2) = schedule.next(t1, tz) else {
        return Ok((Some(t1), 1));
    };
    if now < t2 {
        return Ok((Some(t1), 1));
    }
    let between = (t2 - t1).num_seconds();
    if between < 1 {
        return Err(ParseError(
            "time difference between two schedules is less than 1 second".into(),
        ));
    }
    let elapsed = (now - t1).num_seconds();
    let missed = elapsed / between + 1;
    // Start from the estimate (less two intervals, for schedules that are not evenly spaced)
    // and walk to the true most recent activation.
    let from = t1 + chrono::Duration::seconds((missed - 3).max(0) * between);
    let mut recent = if from <= t1 {
        t1
    } else {
        match schedule.next(from - chrono::Duration::seconds(1), tz) {
            Some(t) if t <= now => t,
            _ => t1,
        }
    };
    while let Some(t) = schedule.next(recent, tz) {
        if t > now {
            break;
        }
        recent = t;
    }
    Ok((Some(recent), missed))
}

/// Parses an IANA time zone name (`timeZone`); `None` means the controller's local zone, which
/// for Capstan is UTC.
pub fn time_zone(name: Option<&str>) -> Result<Tz, String> {
    match name {
        None | Some("") => Ok(Tz::UTC),
        Some(n) => n
            .parse::<Tz>()
            .map_err(|_| format!("unknown time zone {n}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(spec: &str, after: &str, tz: &str) -> String {
        let s = Schedule::parse(spec).unwrap();
        s.next(utc(after), time_zone(Some(tz)).unwrap())
            .map(|t| t.to_rfc3339())
            .unwrap_or_default()
    }

    #[test]
    fn macros_ranges_steps_and_lists() {
        let cases = [
            (
                "@hourly",
                "2024-03-01T10:15:00Z",
                "2024-03-01T11:00:00+00:00",
            ),
            (
                "@daily",
                "2024-03-01T10:15:00Z",
                "2024-03-02T00:00:00+00:00",
            ),
            (
                "@midnight",
                "2024-03-01T10:15:00Z",
                "2024-03-02T00:00:00+00:00",
            ),
            (
                "@weekly",
                "2024-03-01T10:15:00Z",
                "2024-03-03T00:00:00+00:00",
            ),
            (
                "@monthly",
                "2024-03-01T10:15:00Z",
                "2024-04-01T00:00:00+00:00",
            ),
            (
                "@yearly",
                "2024-03-01T10:15:00Z",
                "2025-01-01T00:00:00+00:00",
            ),
            (
                "@annually",
                "2024-03-01T10:15:00Z",
                "2025-01-01T00:00:00+00:00",
            ),
            (
                "*/15 * * * *",
                "2024-03-01T10:15:00Z",
                "2024-03-01T10:30:00+00:00",
            ),
            (
                "5/20 * * * *",
                "2024-03-01T10:46:00Z",
                "2024-03-01T11:05:00+00:00",
            ),
            (
                "0 9-17/4 * * *",
                "2024-03-01T13:00:00Z",
                "2024-03-01T17:00:00+00:00",
            ),
            (
                "0 0 * JAN,jul *",
                "2024-03-01T00:00:00Z",
                "2024-07-01T00:00:00+00:00",
            ),
            (
                "30 8 * * MON-FRI",
                "2024-03-01T09:00:00Z",
                "2024-03-04T08:30:00+00:00",
            ),
            (
                "* * * * *",
                "2024-03-01T10:15:30Z",
                "2024-03-01T10:16:00+00:00",
            ),
            (
                "@every 90s",
                "2024-03-01T10:15:30.5Z",
                "2024-03-01T10:17:00+00:00",
            ),
            // Never within five years.
            ("0 0 30 2 *", "2024-03-01T00:00:00Z", ""),
        ];
        for (spec, after, want) in cases {
            assert_eq!(next(spec, after, "UTC"), want, "{spec} after {after}");
        }
    }

    #[test]
    fn day_of_month_and_day_of_week_or_rule() {
        // Both restricted: the 13th or any Friday.
        assert_eq!(
            next("0 0 13 * 5", "2024-09-01T00:00:00Z", "UTC"),
            "2024-09-06T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 13 * 5", "2024-09-10T00:00:00Z", "UTC"),
            "2024-09-13T00:00:00+00:00"
        );
        // A star on either side: both must hold (Fridays only).
        assert_eq!(
            next("0 0 * * 5", "2024-09-07T00:00:00Z", "UTC"),
            "2024-09-13T00:00:00+00:00"
        );
        // `*/2` is not a star: odd days or Mondays.
        assert_eq!(
            next("0 0 */2 * 1", "2024-09-01T00:00:00Z", "UTC"),
            "2024-09-02T00:00:00+00:00"
        );
        // Sunday is 0; 7 is out of range, as in robfig.
        assert_eq!(
            next("0 0 * * 0", "2024-09-02T00:00:00Z", "UTC"),
            "2024-09-08T00:00:00+00:00"
        );
        assert!(Schedule::parse("0 0 * * 7").is_err());
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        assert_eq!(
            next("0 9 * * *", "2024-06-01T00:00:00Z", "America/New_York"),
            "2024-06-01T13:00:00+00:00"
        );
        // 2:30 does not exist on 2024-03-10 in New York: that day is skipped.
        assert_eq!(
            next("30 2 * * *", "2024-03-09T12:00:00Z", "America/New_York"),
            "2024-03-11T06:30:00+00:00"
        );
        // 1:30 happens twice on 2024-11-03: both run.
        let first = next("30 1 * * *", "2024-11-03T00:00:00Z", "America/New_York");
        assert_eq!(first, "2024-11-03T05:30:00+00:00");
        assert_eq!(
            next("30 1 * * *", "2024-11-03T05:30:00Z", "America/New_York"),
            "2024-11-03T06:30:00+00:00"
        );
        assert!(time_zone(Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn bad_specs_get_robfig_messages() {
        let err = |s: &str| Schedule::parse(s).unwrap_err().to_string();
        assert_eq!(
            err("* * * *"),
            "expected exactly 5 fields, found 4: * * * *"
        );
        assert_eq!(
            err("60 * * * *"),
            "end of range (60) above maximum (59): 60"
        );
        assert_eq!(
            err("* * 0 * *"),
            "beginning of range (0) below minimum (1): 0"
        );
        assert_eq!(
            err("5-1 * * * *"),
            "beginning of range (5) beyond end of range (1): 5-1"
        );
        assert_eq!(
            err("*/0 * * * *"),
            "step of range should be a positive number: */0"
        );
        assert_eq!(err("1-2-3 * * * *"), "too many hyphens: 1-2-3");
        assert_eq!(
            err("x * * * *"),
            "failed to parse int from x: invalid syntax"
        );
        assert_eq!(err("@fortnightly"), "unrecognized descriptor: @fortnightly");
        assert_eq!(err(""), "empty spec string");
        assert!(err("TZ=UTC * * * * *").contains("use timeZone field"));
    }

    #[test]
    fn missed_schedules_are_counted_and_the_latest_is_run() {
        let tz = Tz::UTC;
        let every5 = Schedule::parse("*/5 * * * *").unwrap();
        let last = utc("2024-03-01T10:00:00Z");
        // Not due yet.
        assert_eq!(
            most_recent(&every5, tz, last, utc("2024-03-01T10:04:59Z")).unwrap(),
            (None, 0)
        );
        // One due.
        let (t, n) = most_recent(&every5, tz, last, utc("2024-03-01T10:07:00Z")).unwrap();
        assert_eq!((t.unwrap(), n), (utc("2024-03-01T10:05:00Z"), 1));
        // Many: 10:05 … 19:00 is 108 activations (more than 100: the controller warns).
        let (t, n) = most_recent(&every5, tz, last, utc("2024-03-01T19:02:00Z")).unwrap();
        assert_eq!((t.unwrap(), n), (utc("2024-03-01T19:00:00Z"), 108));
        // Unevenly spaced: the estimate is off, the time is not.
        let uneven = Schedule::parse("0 1,2,23 * * *").unwrap();
        let (t, _) = most_recent(
            &uneven,
            tz,
            utc("2024-03-01T00:00:00Z"),
            utc("2024-03-05T12:00:00Z"),
        )
        .unwrap();
        assert_eq!(t.unwrap(), utc("2024-03-05T02:00:00Z"));
    }
}
