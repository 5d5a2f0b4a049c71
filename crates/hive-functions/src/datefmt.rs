//! Java `SimpleDateFormat` patterns (`yyyy-MM-dd HH:mm:ss`), as Hive's `date_format`,
//! `from_unixtime` and `unix_timestamp` take them: formatting and (lenient) parsing.
//!
//! Letters: `G y Y M L w W D d F E u a H k K h m s S z Z X`; text in single quotes is literal
//! (`''` is a quote). `S` is the fraction of a second to as many digits as letters (`SSS`
//! milliseconds, `SSSSSS` microseconds, as java.time's formatter; for `SSS` SimpleDateFormat
//! agrees). rxgate computes in UTC, so `z` prints `UTC`, `Z` `+0000` and `X` `Z`. Parsing
//! follows SimpleDateFormat's lenient mode: out-of-range fields roll over (`2021-02-30` is
//! March 2nd) and text after the pattern is ignored.

use chrono::{Datelike, Days, Months, NaiveDate, NaiveDateTime, TimeDelta, Timelike};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const LETTERS: &str = "GyYMLwWDdFEuaHkKhmsSzZX";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Literal(String),
    Field(char, usize),
}

/// A parsed Java date pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JavaPattern(Vec<Item>);

/// Hive's default pattern of `from_unixtime` and `unix_timestamp`.
pub(crate) const DEFAULT_PATTERN: &str = "yyyy-MM-dd HH:mm:ss";

impl JavaPattern {
    /// Parses a pattern; an unknown letter or an unterminated quote is an error, as in Java.
    pub(crate) fn parse(pattern: &str) -> Result<Self, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut items: Vec<Item> = vec![];
        let push_literal = |items: &mut Vec<Item>, s: &str| match items.last_mut() {
            Some(Item::Literal(l)) => l.push_str(s),
            _ => items.push(Item::Literal(s.to_string())),
        };
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '\'' {
                if chars.get(i + 1) == Some(&'\'') {
                    push_literal(&mut items, "'");
                    i += 2;
                    continue;
                }
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("unterminated quote in date pattern \"{pattern}\"")),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            text.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            text.push(*ch);
                            i += 1;
                        }
                    }
                }
                push_literal(&mut items, &text);
            } else if c.is_ascii_alphabetic() {
                if !LETTERS.contains(c) {
                    return Err(format!("illegal pattern character '{c}' in date pattern \"{pattern}\""));
                }
                let mut n = 1;
                while chars.get(i + n) == Some(&c) {
                    n += 1;
                }
                items.push(Item::Field(c, n));
                i += n;
            } else {
                push_literal(&mut items, &c.to_string());
                i += 1;
            }
        }
        Ok(Self(items))
    }

    /// Formats a date-time (UTC wall time).
    pub(crate) fn format(&self, dt: &NaiveDateTime) -> String {
        let mut out = String::with_capacity(24);
        for item in &self.0 {
            match item {
                Item::Literal(s) => out.push_str(s),
                Item::Field(c, n) => format_field(&mut out, *c, *n, dt),
            }
        }
        out
    }

    /// Parses text with this pattern (lenient, trailing text ignored); the result is UTC.
    pub(crate) fn parse_datetime(&self, text: &str) -> Option<NaiveDateTime> {
        let mut f = Fields::default();
        let mut rest = text;
        for (k, item) in self.0.iter().enumerate() {
            match item {
                Item::Literal(s) => rest = rest.strip_prefix(s.as_str())?,
                Item::Field(c, n) => {
                    let abutting = matches!(self.0.get(k + 1), Some(Item::Field(next, m)) if is_numeric(*next, *m));
                    rest = f.read(*c, *n, rest, abutting)?;
                }
            }
        }
        f.build()
    }
}

fn is_numeric(c: char, n: usize) -> bool {
    match c {
        'M' | 'L' => n < 3,
        'G' | 'E' | 'a' | 'z' | 'Z' | 'X' => false,
        _ => true,
    }
}

fn pad(out: &mut String, v: i64, n: usize) {
    if v < 0 {
        out.push('-');
    }
    let digits = v.unsigned_abs().to_string();
    for _ in digits.len()..n {
        out.push('0');
    }
    out.push_str(&digits);
}

/// Day of the week counted from Sunday (0) as in the US locale Java defaults to.
fn from_sunday(d: NaiveDate) -> i64 {
    i64::from(d.weekday().num_days_from_sunday())
}

/// Week of the year in the US convention (weeks start on Sunday; week 1 holds January 1st).
fn week_of_year(d: NaiveDate) -> i64 {
    let saturday = d + Days::new((6 - from_sunday(d)) as u64);
    if saturday.year() > d.year() {
        return 1;
    }
    let jan1 = NaiveDate::from_ymd_opt(d.year(), 1, 1).expect("January 1st exists");
    (i64::from(d.ordinal0()) + from_sunday(jan1)) / 7 + 1
}

fn week_of_month(d: NaiveDate) -> i64 {
    let first = d.with_day(1).expect("day 1 exists");
    (i64::from(d.day0()) + from_sunday(first)) / 7 + 1
}

fn format_field(out: &mut String, c: char, n: usize, dt: &NaiveDateTime) {
    let d = dt.date();
    match c {
        'G' => out.push_str(if d.year() > 0 { "AD" } else { "BC" }),
        'y' | 'Y' => {
            let year = if c == 'y' { d.year() } else { d.iso_week().year() };
            if n == 2 {
                pad(out, i64::from(year.rem_euclid(100)), 2)
            } else {
                pad(out, i64::from(year), n)
            }
        }
        'M' | 'L' => match n {
            1 | 2 => pad(out, i64::from(d.month()), n),
            3 => out.push_str(&MONTHS[d.month0() as usize][..3]),
            _ => out.push_str(MONTHS[d.month0() as usize]),
        },
        'w' => pad(out, week_of_year(d), n),
        'W' => pad(out, week_of_month(d), n),
        'D' => pad(out, i64::from(d.ordinal()), n),
        'd' => pad(out, i64::from(d.day()), n),
        'F' => pad(out, i64::from(d.day0() / 7 + 1), n),
        'E' => {
            let name = WEEKDAYS[d.weekday().num_days_from_monday() as usize];
            out.push_str(if n >= 4 { name } else { &name[..3] })
        }
        'u' => pad(out, i64::from(d.weekday().number_from_monday()), n),
        'a' => out.push_str(if dt.hour() < 12 { "AM" } else { "PM" }),
        'H' => pad(out, i64::from(dt.hour()), n),
        'k' => pad(out, i64::from(if dt.hour() == 0 { 24 } else { dt.hour() }), n),
        'K' => pad(out, i64::from(dt.hour() % 12), n),
        'h' => pad(out, i64::from(if dt.hour().is_multiple_of(12) { 12 } else { dt.hour() % 12 }), n),
        'm' => pad(out, i64::from(dt.minute()), n),
        's' => pad(out, i64::from(dt.second()), n),
        'S' => {
            let nanos = format!("{:09}", dt.nanosecond().min(999_999_999));
            if n <= 9 {
                out.push_str(&nanos[..n]);
            } else {
                out.push_str(&nanos);
                out.extend(std::iter::repeat_n('0', n - 9));
            }
        }
        'z' => out.push_str("UTC"),
        'Z' => out.push_str("+0000"),
        'X' => out.push('Z'),
        _ => {}
    }
}

/// Field values read while parsing; defaults are SimpleDateFormat's (1970-01-01 00:00:00).
#[derive(Debug)]
struct Fields {
    year: i64,
    month: i64,
    day: i64,
    day_of_year: Option<i64>,
    hour: i64,
    /// `h`/`K` were used: `hour` is on a 12-hour clock.
    twelve: bool,
    pm: Option<bool>,
    minute: i64,
    second: i64,
    nanos: i64,
    offset_secs: i64,
}

impl Default for Fields {
    fn default() -> Self {
        Self {
            year: 1970,
            month: 1,
            day: 1,
            day_of_year: None,
            hour: 0,
            twelve: false,
            pm: None,
            minute: 0,
            second: 0,
            nanos: 0,
            offset_secs: 0,
        }
    }
}

/// Reads a run of digits: exactly `n` when the next field is numeric too (`yyyyMMdd`),
/// else as many as there are.
fn digits(s: &str, n: usize, abutting: bool) -> Option<(&str, &str)> {
    let avail = s.bytes().take_while(u8::is_ascii_digit).count();
    let take = if abutting { n.min(avail) } else { avail };
    if take == 0 || (abutting && take < n) {
        return None;
    }
    Some((&s[..take], &s[take..]))
}

/// Matches one of `names` (full or three-letter), case-insensitively; returns its index.
fn name_prefix<'a>(s: &'a str, names: &[&str]) -> Option<(usize, &'a str)> {
    let lower = s.to_ascii_lowercase();
    for (i, name) in names.iter().enumerate() {
        if lower.starts_with(&name.to_ascii_lowercase()) {
            return Some((i, &s[name.len()..]));
        }
    }
    for (i, name) in names.iter().enumerate() {
        if lower.starts_with(&name[..3].to_ascii_lowercase()) {
            return Some((i, &s[3..]));
        }
    }
    None
}

impl Fields {
    fn read<'a>(&mut self, c: char, n: usize, s: &'a str, abutting: bool) -> Option<&'a str> {
        match c {
            'G' => {
                let up = s.get(..2)?.to_ascii_uppercase();
                (up == "AD" || up == "BC").then(|| &s[2..])
            }
            'M' | 'L' if n >= 3 => {
                let (i, rest) = name_prefix(s, &MONTHS)?;
                self.month = i as i64 + 1;
                Some(rest)
            }
            'E' => name_prefix(s, &WEEKDAYS).map(|(_, rest)| rest),
            'a' => {
                let up = s.get(..2)?.to_ascii_uppercase();
                self.pm = Some(match up.as_str() {
                    "AM" => false,
                    "PM" => true,
                    _ => return None,
                });
                Some(&s[2..])
            }
            'z' | 'Z' | 'X' => {
                let up = s.to_ascii_uppercase();
                for zero in ["UTC", "GMT", "Z"] {
                    if up.starts_with(zero) {
                        let rest = &s[zero.len()..];
                        if zero == "Z" || !rest.starts_with(['+', '-']) {
                            self.offset_secs = 0;
                            return Some(rest);
                        }
                        return self.offset(rest);
                    }
                }
                self.offset(s)
            }
            _ => {
                let (text, rest) = digits(s, n, abutting)?;
                let v: i64 = text.parse().ok()?;
                match c {
                    'y' | 'Y' => {
                        self.year = if n <= 2 && text.len() == 2 {
                            // SimpleDateFormat's pivot: within 80 years before and 20 after now.
                            let now = chrono::Utc::now().year() as i64;
                            let century = (now + 20) / 100 * 100;
                            if century + v > now + 20 {
                                century - 100 + v
                            } else {
                                century + v
                            }
                        } else {
                            v
                        }
                    }
                    'M' | 'L' => self.month = v,
                    'd' => self.day = v,
                    'D' => self.day_of_year = Some(v),
                    'H' => self.hour = v,
                    'k' => self.hour = if v == 24 { 0 } else { v },
                    'K' | 'h' => {
                        self.twelve = true;
                        self.hour = if c == 'h' && v == 12 { 0 } else { v };
                    }
                    'm' => self.minute = v,
                    's' => self.second = v,
                    'S' => {
                        let mut frac = text.to_string();
                        frac.truncate(9);
                        while frac.len() < 9 {
                            frac.push('0');
                        }
                        self.nanos = frac.parse().ok()?;
                    }
                    // Week numbers and day-of-week numbers are read and ignored.
                    _ => {}
                }
                Some(rest)
            }
        }
    }

    fn offset<'a>(&mut self, s: &'a str) -> Option<&'a str> {
        let sign = match s.chars().next()? {
            '+' => 1,
            '-' => -1,
            _ => return None,
        };
        let s = &s[1..];
        let (h, rest) = digits(s, 2, true)?;
        let rest = rest.strip_prefix(':').unwrap_or(rest);
        let (m, rest) = digits(rest, 2, true).unwrap_or(("0", rest));
        self.offset_secs = sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60);
        Some(rest)
    }

    /// The instant, rolling over out-of-range fields as lenient SimpleDateFormat does.
    fn build(&self) -> Option<NaiveDateTime> {
        let base = NaiveDate::from_ymd_opt(i32::try_from(self.year).ok()?, 1, 1)?;
        let date = match self.day_of_year {
            Some(doy) => add_days(base, doy - 1)?,
            None => {
                let months = self.month - 1;
                let shifted = if months >= 0 {
                    base.checked_add_months(Months::new(u32::try_from(months).ok()?))?
                } else {
                    base.checked_sub_months(Months::new(u32::try_from(-months).ok()?))?
                };
                add_days(shifted, self.day - 1)?
            }
        };
        // AM/PM counts with a 12-hour field only (`HH … a` keeps HH), as in Java.
        let hour = if self.twelve && self.pm == Some(true) { self.hour + 12 } else { self.hour };
        let secs = hour * 3600 + self.minute * 60 + self.second - self.offset_secs;
        date.and_hms_opt(0, 0, 0)?
            .checked_add_signed(TimeDelta::try_seconds(secs)?)?
            .checked_add_signed(TimeDelta::nanoseconds(self.nanos))
    }
}

fn add_days(d: NaiveDate, days: i64) -> Option<NaiveDate> {
    if days >= 0 {
        d.checked_add_days(Days::new(days as u64))
    } else {
        d.checked_sub_days(Days::new(days.unsigned_abs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    fn fmt(p: &str, s: &str) -> String {
        JavaPattern::parse(p).unwrap().format(&dt(s))
    }

    #[test]
    fn formats_like_simple_date_format() {
        assert_eq!(fmt("yyyy-MM-dd", "2021-12-31 23:59:58"), "2021-12-31");
        assert_eq!(fmt(DEFAULT_PATTERN, "2021-03-04 05:06:07"), "2021-03-04 05:06:07");
        assert_eq!(fmt("yy/M/d H:m:s", "2021-03-04 05:06:07"), "21/3/4 5:6:7");
        assert_eq!(fmt("MMM MMMM EEE EEEE", "2021-03-04 00:00:00"), "Mar March Thu Thursday");
        assert_eq!(fmt("hh:mm a", "2021-03-04 00:30:00"), "12:30 AM");
        assert_eq!(fmt("hh:mm a", "2021-03-04 13:30:00"), "01:30 PM");
        assert_eq!(fmt("k K", "2021-03-04 00:00:00"), "24 0");
        assert_eq!(fmt("yyyy-MM-dd'T'HH:mm:ss.SSS", "2021-03-04 05:06:07.123456"), "2021-03-04T05:06:07.123");
        assert_eq!(fmt("SSSSSS", "2021-03-04 05:06:07.123456"), "123456");
        assert_eq!(fmt("'week' w, D", "2021-12-31 00:00:00"), "week 1, 365");
        assert_eq!(fmt("w", "2021-01-03 00:00:00"), "2");
        assert_eq!(fmt("W F u", "2021-03-04 00:00:00"), "1 1 4");
        assert_eq!(fmt("yyyyMMdd", "2021-03-04 00:00:00"), "20210304");
        assert_eq!(fmt("'It''s' yyyy", "2021-03-04 00:00:00"), "It's 2021");
        assert_eq!(fmt("z Z X G", "2021-03-04 00:00:00"), "UTC +0000 Z AD");
        assert!(JavaPattern::parse("yyyy-qq").is_err());
        assert!(JavaPattern::parse("yyyy 'open").is_err());
    }

    fn parse(p: &str, s: &str) -> Option<String> {
        JavaPattern::parse(p).unwrap().parse_datetime(s).map(|d| d.format("%Y-%m-%d %H:%M:%S%.f").to_string())
    }

    #[test]
    fn parses_leniently_like_simple_date_format() {
        assert_eq!(parse(DEFAULT_PATTERN, "2021-03-04 05:06:07").as_deref(), Some("2021-03-04 05:06:07"));
        assert_eq!(parse("yyyy-MM-dd", "2021-03-04").as_deref(), Some("2021-03-04 00:00:00"));
        // Trailing text is ignored; a missing field fails.
        assert_eq!(parse("yyyy-MM-dd", "2021-03-04 10:00:00").as_deref(), Some("2021-03-04 00:00:00"));
        assert_eq!(parse(DEFAULT_PATTERN, "2021-03-04"), None);
        assert_eq!(parse("yyyy-MM-dd", "not a date"), None);
        // Lenient roll-over.
        assert_eq!(parse("yyyy-MM-dd", "2021-02-30").as_deref(), Some("2021-03-02 00:00:00"));
        assert_eq!(parse("yyyyMMdd", "20210304").as_deref(), Some("2021-03-04 00:00:00"));
        assert_eq!(parse("dd MMM yyyy", "04 mar 2021").as_deref(), Some("2021-03-04 00:00:00"));
        assert_eq!(parse("MMMM d, yyyy h:mm a", "March 4, 2021 1:05 PM").as_deref(), Some("2021-03-04 13:05:00"));
        assert_eq!(
            parse("yyyy-MM-dd HH:mm:ss.SSS", "2021-03-04 05:06:07.5").as_deref(),
            Some("2021-03-04 05:06:07.500")
        );
        assert_eq!(parse("yyyy-MM-dd HH:mm Z", "2021-03-04 05:06 +0130").as_deref(), Some("2021-03-04 03:36:00"));
        assert_eq!(parse("yyyy-MM-dd HH:mm X", "2021-03-04 05:06 Z").as_deref(), Some("2021-03-04 05:06:00"));
        assert_eq!(parse("EEE, d MMM yyyy", "Thu, 4 Mar 2021").as_deref(), Some("2021-03-04 00:00:00"));
    }
}
