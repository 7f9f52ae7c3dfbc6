//! Wall-clock time as ward shows it: Unix milliseconds in status and events,
//! RFC 3339 in UTC with milliseconds in log records and reports. One
//! formatter, allocation-free, for both.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds (0 for a clock set before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Unix milliseconds as RFC 3339 in UTC with milliseconds
/// (`2026-01-14T10:00:00.000Z`).
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let at = Timestamp::from_unix(Duration::from_millis(unix_ms));
    String::from_utf8_lossy(at.as_bytes()).into_owned()
}

/// A UTC time formatted as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp([u8; 24]);

impl Timestamp {
    pub fn now() -> Timestamp {
        // A clock set before 1970 is not worth an error; it shows as 1970.
        Timestamp::from_unix(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }

    /// Formats a time given as the duration since the Unix epoch. Times past
    /// the year 9999, which four digits cannot show, show as its last instant.
    pub fn from_unix(since_epoch: Duration) -> Timestamp {
        const LAST_SECOND: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
        let (secs, millis) = match since_epoch.as_secs() {
            s if s > LAST_SECOND => (LAST_SECOND, 999),
            s => (s, u64::from(since_epoch.subsec_millis())),
        };
        let (year, month, day) = civil_from_days(secs / 86_400);
        let time = secs % 86_400;
        let mut out = *b"0000-00-00T00:00:00.000Z";
        put_digits(&mut out[0..4], year);
        put_digits(&mut out[5..7], month);
        put_digits(&mut out[8..10], day);
        put_digits(&mut out[11..13], time / 3600);
        put_digits(&mut out[14..16], time / 60 % 60);
        put_digits(&mut out[17..19], time % 60);
        put_digits(&mut out[20..23], millis);
        Timestamp(out)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Writes the last `slot.len()` decimal digits of `value`, zero-padded.
fn put_digits(slot: &mut [u8], mut value: u64) {
    for digit in slot.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The proleptic Gregorian (year, month, day) of a count of days since
/// 1970-01-01: Howard Hinnant's `civil_from_days`, for days ≥ 0 only, which is
/// all a clock clamped to the epoch can produce. The calendar repeats every
/// 400 years (an era of 146 097 days); counting eras from 0000-03-01 puts the
/// leap day last in each year, so months and leap years fall out of integer
/// division.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Days from 0000-03-01 to 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    // In [0, 399]: the -1 corrections skip the leap days of years 4, 100
    // and 400 of the era, so every 365 days counts a year.
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // In [0, 11] from March: month lengths 31 30 31 30 31 repeat, which
    // (153 m + 2) / 5 counts exactly.
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    // January and February belong to the next civil year.
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: u64, millis: u32) -> String {
        let at = Timestamp::from_unix(Duration::new(secs, millis * 1_000_000));
        String::from_utf8(at.as_bytes().to_vec()).unwrap()
    }
    #[test]
    fn timestamps_of_known_instants() {
        assert_eq!(ts(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(ts(951_782_400, 0), "2000-02-29T00:00:00.000Z");
        assert_eq!(ts(951_868_800, 0), "2000-03-01T00:00:00.000Z");
        assert_eq!(ts(68_169_600, 0), "1972-02-29T00:00:00.000Z");
        assert_eq!(ts(1_483_142_400, 0), "2016-12-31T00:00:00.000Z");
        assert_eq!(ts(1_700_000_000, 123), "2023-11-14T22:13:20.123Z");
        assert_eq!(ts(1_700_000_000, 5), "2023-11-14T22:13:20.005Z");
        // 2100 is not a leap year.
        assert_eq!(ts(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
        assert_eq!(ts(253_402_300_799, 999), "9999-12-31T23:59:59.999Z");
        assert_eq!(ts(u64::MAX, 0), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn civil_dates_agree_with_counting_days() {
        // Walk four centuries day by day and check each date follows the last.
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let month_len = |y: u64, m: u64| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut expected = (1970, 1, 1);
        for days in 0..146_097 {
            assert_eq!(civil_from_days(days), expected, "day {days}");
            let (y, m, d) = expected;
            expected = if d < month_len(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn formats_rfc3339_with_millis() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_768_384_800_000), "2026-01-14T10:00:00.000Z");
        assert_eq!(rfc3339_ms(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(rfc3339_ms(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
    }
}
