//! Schedules: a named task template submitted on a cron expression (nightly dependency
//! updates, a weekly code-health pass). What a schedule is, the rules of its fields, and when
//! it runs next; the server stores schedules and submits their tasks (docs/schedules.md).

use std::str::FromStr;

use chrono::Utc;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

use crate::{TaskId, TaskSpec, Timestamp, ValidationError};

/// What a schedule does when its time comes while the task it submitted last is unfinished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Submit nothing this time (an agent working on the same branch twice would conflict with
    /// itself); the schedule says it skipped.
    #[default]
    Skip,
    /// Submit another task anyway.
    Allow,
}

impl FromStr for Overlap {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(Self::Skip),
            "allow" => Ok(Self::Allow),
            other => Err(format!("unknown overlap policy {other:?}: use skip or allow")),
        }
    }
}

/// A schedule as set (`PUT /v1/schedules/{name}`'s body).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Five-field cron expression (minute hour day-of-month month day-of-week, as crontab
    /// reads it), or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    pub cron: String,
    /// IANA time zone the expression is read in (`Europe/Berlin`); UTC when absent.
    pub time_zone: Option<String>,
    /// The task submitted each time, as `POST /v1/tasks` takes it. The project's defaults and
    /// the profile are applied when it is submitted, so a changed project applies to the next
    /// run. `depends_on`, `run_after`, `idempotency_key` and `follow_up_of` have no meaning
    /// for a recurring task and are refused.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::protocol::openapi::TaskSpecSchema))]
    pub task: TaskSpec,
    /// When the last task is still queued or running: `skip` (default) or `allow`.
    #[serde(default)]
    pub overlap: Overlap,
    /// A paused schedule submits nothing until it is resumed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// A stored schedule (`GET /v1/schedules/{name}`).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Schedule {
    pub name: String,
    pub spec: ScheduleSpec,
    /// When it runs next; absent while paused.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub next_run_at: Option<Timestamp>,
    /// The time of its last run (the one it was due at), submitted or skipped.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_run_at: Option<Timestamp>,
    /// The task its last run submitted.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Uuid))]
    pub last_task: Option<TaskId>,
    /// What its last run did, in words ("submitted task …", "skipped: task … is still
    /// running", or why the task could not be submitted).
    pub last_message: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Timestamp,
}

/// `GET /v1/schedules`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleList {
    pub schedules: Vec<Schedule>,
}

/// The parser of crontab's five fields: no seconds, no years.
fn crontab() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
}

/// The five fields, with what each takes.
const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day-of-week", "0-7 or sun-sat"),
];

/// Why `cron` is not an expression, naming the field at fault: the parser's own words say
/// neither which field nor what it takes ("Number out of bounds").
fn explain(cron: &str, e: &croner::errors::CronError) -> String {
    const FORM: &str = "minute hour day-of-month month day-of-week (e.g. \"0 6 * * 1-5\"), or @hourly, \
                        @daily, @weekly, @monthly, @yearly";
    let parts: Vec<&str> = cron.split_whitespace().collect();
    if parts.len() != 5 {
        if parts.first().is_some_and(|p| p.starts_with('@')) {
            return format!("unknown nickname {:?}: use five fields, {FORM}", parts[0]);
        }
        let fields = crate::render::count(parts.len(), "field", "fields");
        return format!("{fields}, not five: use {FORM}");
    }
    // Each field alone, the others `*`: the first that fails is the one at fault.
    for (i, (name, takes)) in FIELDS.iter().enumerate() {
        let mut probe = ["*"; 5];
        probe[i] = parts[i];
        if crontab().parse(&probe.join(" ")).is_err() {
            return format!(
                "the {name} field {:?} is not valid: it takes {takes}, lists (a,b), ranges (a-b) and steps (*/n)",
                parts[i]
            );
        }
    }
    e.to_string().trim_end_matches('.').to_string()
}

/// A parsed cron expression in its time zone: the one thing that says when a schedule runs.
#[derive(Debug, Clone)]
pub struct When {
    cron: Cron,
    tz: chrono_tz::Tz,
}

impl When {
    /// Parse `cron` (five fields, or a nickname such as `@daily`) read in `time_zone` (IANA;
    /// UTC when `None`). Errors name the field of a schedule they belong to.
    pub fn parse(cron: &str, time_zone: Option<&str>) -> Result<Self, Vec<ValidationError>> {
        let mut errs = Vec::new();
        let parsed = crontab().parse(cron.trim());
        let cron = match parsed {
            Ok(c) if cron.len() <= 200 => Some(c),
            Ok(_) => {
                errs.push(ValidationError::new("cron", "must be at most 200 characters"));
                None
            }
            Err(e) => {
                errs.push(ValidationError::new("cron", explain(cron, &e)));
                None
            }
        };
        let tz = match time_zone {
            None => Some(chrono_tz::UTC),
            Some(name) => match name.parse::<chrono_tz::Tz>() {
                Ok(tz) => Some(tz),
                Err(_) => {
                    errs.push(ValidationError::new(
                        "time_zone",
                        format!("unknown time zone {name:?}: use an IANA name such as Europe/Berlin or UTC"),
                    ));
                    None
                }
            },
        };
        match (cron, tz) {
            (Some(cron), Some(tz)) if errs.is_empty() => Ok(Self { cron, tz }),
            _ => Err(errs),
        }
    }

    /// The first time it runs strictly after `t`; `None` when it never does again (a date that
    /// does not come, such as 30 February).
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let local = t.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|n| n.with_timezone(&Utc))
    }
}

/// The idempotency key of the task a schedule submits for its run at `at`: two server
/// replicas submitting the same run get the same task.
pub fn run_key(name: &str, at: Timestamp) -> String {
    format!("{}{}", key_prefix(name), at.format("%Y-%m-%dT%H:%MZ"))
}

/// What the idempotency key of every task schedule `name` submits starts with: how its tasks
/// are listed (`GET /v1/tasks?schedule=NAME`).
pub fn key_prefix(name: &str) -> String {
    format!("schedule:{name}:")
}

/// The idempotency key of the task of a run asked for by hand at `at` (to the millisecond:
/// each such run is its own).
pub fn manual_run_key(name: &str, at: Timestamp) -> String {
    format!(
        "{}manual:{}",
        key_prefix(name),
        at.format("%Y-%m-%dT%H:%M:%S%.3fZ")
    )
}

impl ScheduleSpec {
    /// When a schedule with this spec runs next after `t`: `None` while paused, or when its
    /// expression does not parse (a stored one always does) or never comes again.
    pub fn next_run_after(&self, t: Timestamp) -> Option<Timestamp> {
        if self.paused {
            return None;
        }
        When::parse(&self.cron, self.time_zone.as_deref())
            .ok()?
            .next_after(t)
    }

    /// Check every field but the task's own (the server checks that as it checks a
    /// submitted task, with the project's defaults applied); all problems, not the first.
    pub fn validate(&self) -> Result<(), Vec<ValidationError>> {
        let when = When::parse(&self.cron, self.time_zone.as_deref());
        let mut errs = when.as_ref().err().cloned().unwrap_or_default();
        let t = &self.task;
        let refused = [
            ("depends_on", !t.depends_on.is_empty()),
            ("run_after", t.run_after.is_some()),
            ("idempotency_key", t.idempotency_key.is_some()),
            ("follow_up_of", t.follow_up_of.is_some()),
        ];
        for (field, set) in refused {
            if set {
                errs.push(ValidationError::new(
                    format!("task.{field}"),
                    "has no meaning for a scheduled task: leave it out",
                ));
            }
        }
        if let Ok(w) = when
            && w.next_after(Utc::now()).is_none()
        {
            errs.push(ValidationError::new("cron", "never runs: no such date comes"));
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Timestamp {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("valid time")
    }

    #[test]
    fn the_next_run_is_read_in_the_schedules_time_zone() {
        let w = When::parse("0 9 * * 1-5", None).expect("parses");
        // Saturday 2026-12-05 10:00 UTC: next is Monday 09:00 UTC.
        assert_eq!(w.next_after(at(2026, 12, 5, 10, 0)), Some(at(2026, 12, 7, 9, 0)));
        // Strictly after: at 09:00 on a weekday the next run is the next day's.
        assert_eq!(w.next_after(at(2026, 12, 7, 9, 0)), Some(at(2026, 12, 8, 9, 0)));

        let berlin = When::parse("0 9 * * *", Some("Europe/Berlin")).expect("parses");
        // Winter: 09:00 in Berlin is 08:00 UTC; summer: 07:00 UTC.
        assert_eq!(
            berlin.next_after(at(2026, 12, 5, 10, 0)),
            Some(at(2026, 12, 6, 8, 0))
        );
        assert_eq!(
            berlin.next_after(at(2026, 7, 1, 10, 0)),
            Some(at(2026, 7, 2, 7, 0))
        );

        // Both day fields restricted: either one matching is enough, as crontab has it (the
        // 13th, or a Friday: Friday 2026-12-11 comes first).
        let either = When::parse("0 0 13 * 5", None).expect("parses");
        assert_eq!(
            either.next_after(at(2026, 12, 5, 10, 0)),
            Some(at(2026, 12, 11, 0, 0))
        );

        let daily = When::parse("@daily", None).expect("nickname");
        assert_eq!(
            daily.next_after(at(2026, 12, 5, 10, 0)),
            Some(at(2026, 12, 6, 0, 0))
        );
    }

    #[test]
    fn a_run_time_skipped_by_a_clock_change_runs_after_the_change() {
        // 2027-03-28 02:30 does not exist in Berlin (clocks go from 02:00 to 03:00): that
        // day's run is at 03:00 local, 01:00 UTC, not skipped.
        let w = When::parse("30 2 * * *", Some("Europe/Berlin")).expect("parses");
        let next = w.next_after(at(2027, 3, 27, 12, 0)).expect("runs");
        assert_eq!(next, at(2027, 3, 28, 1, 0));
    }

    #[test]
    fn a_run_time_that_happens_twice_runs_once() {
        // 2026-10-25 02:30 happens twice in Berlin (clocks go from 03:00 back to 02:00).
        let w = When::parse("30 2 * * *", Some("Europe/Berlin")).expect("parses");
        let first = w.next_after(at(2026, 10, 24, 12, 0)).expect("runs");
        assert_eq!(first, at(2026, 10, 25, 0, 30));
        assert_eq!(w.next_after(first), Some(at(2026, 10, 26, 1, 30)));
    }

    #[test]
    fn bad_expressions_and_zones_name_their_field() {
        let e = When::parse("0 9 * *", Some("Mars/Olympus")).unwrap_err();
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["cron", "time_zone"]);
        assert_eq!(
            e[0].message,
            "4 fields, not five: use minute hour day-of-month month day-of-week (e.g. \"0 6 * * 1-5\"), \
             or @hourly, @daily, @weekly, @monthly, @yearly"
        );
        // One word is one field, not "1 fields".
        assert!(
            When::parse("bogus", None).unwrap_err()[0]
                .message
                .starts_with("1 field, not five: use minute hour")
        );
        // Seconds and years are not crontab's.
        assert!(When::parse("0 0 9 * * *", None).is_err());
        // The field at fault is named, with what it takes.
        let bad = |c: &str| When::parse(c, None).unwrap_err().remove(0).message;
        assert!(bad("61 * * * *").starts_with("the minute field \"61\" is not valid: it takes 0-59"));
        assert!(bad("0 25 * * *").starts_with("the hour field \"25\" is not valid: it takes 0-23"));
        assert!(bad("0 3 32 * *").starts_with("the day-of-month field \"32\" is not valid"));
        assert!(bad("0 3 * * mon-fry").starts_with("the day-of-week field \"mon-fry\" is not valid"));
        assert!(bad("@nightly").starts_with("unknown nickname \"@nightly\": use five fields"));
    }

    #[test]
    fn a_template_refuses_what_a_recurring_task_cannot_have() {
        let spec = ScheduleSpec {
            cron: "0 3 * * *".into(),
            time_zone: None,
            task: TaskSpec {
                idempotency_key: Some("k".into()),
                run_after: Some(Utc::now()),
                ..TaskSpec::command("https://example.com/r.git", "make")
            },
            overlap: Overlap::Skip,
            paused: false,
        };
        let errs = spec.validate().unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["task.run_after", "task.idempotency_key"]);
        let never = ScheduleSpec {
            cron: "0 0 30 2 *".into(),
            task: TaskSpec::command("https://example.com/r.git", "make"),
            ..spec
        };
        assert_eq!(never.validate().unwrap_err()[0].field, "cron");
    }

    #[test]
    fn a_runs_key_names_the_schedule_and_the_minute() {
        assert_eq!(
            run_key("nightly", at(2026, 12, 6, 3, 0)),
            "schedule:nightly:2026-12-06T03:00Z"
        );
    }

    #[test]
    fn overlap_reads_and_writes_its_names() {
        assert_eq!("skip".parse::<Overlap>(), Ok(Overlap::Skip));
        assert_eq!("allow".parse::<Overlap>(), Ok(Overlap::Allow));
        assert!("replace".parse::<Overlap>().is_err());
    }
}
