//! The seed pipeline's cleaning rules, one small function each (DESIGN §3).

/// The digits of a value, in order (`"NPI 12-34"` → `"1234"`); `None` when there are none.
pub fn digits(value: &str) -> Option<String> {
    let d: String = value.chars().filter(|c| c.is_ascii_digit()).collect();
    (!d.is_empty()).then_some(d)
}

/// `years_of_exp` such as `"= 45"` → 45; `None` without digits or when out of `i32` range.
pub fn years_of_exp(value: &str) -> Option<i32> {
    digits(value)?.parse().ok()
}

/// An integer count; malformed or empty values are `None` (never a reason to reject a row).
pub fn int(value: &str) -> Option<i64> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    v.parse().ok()
}

/// A decimal amount; malformed, empty or non-finite values are `None`.
pub fn float(value: &str) -> Option<f64> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    v.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// A text value; empty text is `None` (as Spark's CSV reader gives NULL for empty fields).
pub fn text(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

/// Full name = first + " " + last, skipping a missing part; `None` when both are missing.
pub fn full_name(first: Option<&str>, last: Option<&str>) -> Option<String> {
    match (first, last) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        (Some(f), None) => Some(f.to_string()),
        (None, Some(l)) => Some(l.to_string()),
        (None, None) => None,
    }
}

/// The imputed claim count: the prescriber's average, rounded half away from zero.
pub fn imputed_trx(sum: i64, count: i64) -> Option<i64> {
    (count > 0).then(|| (sum as f64 / count as f64).round() as i64)
}

/// Number of ZIP codes in a space-separated list.
pub fn zip_count(zips: Option<&str>) -> i32 {
    zips.map(|z| z.split_whitespace().count() as i32).unwrap_or(0)
}

/// Upper-cases a dimension value (city, state, county names).
pub fn upper(value: &str) -> String {
    value.to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npi_digits_are_extracted() {
        assert_eq!(digits("1234567893").as_deref(), Some("1234567893"));
        assert_eq!(digits(" 12-34 x").as_deref(), Some("1234"));
        assert_eq!(digits("N/A"), None);
        assert_eq!(digits(""), None);
    }

    #[test]
    fn years_of_exp_from_seed_format() {
        assert_eq!(years_of_exp("= 45"), Some(45));
        assert_eq!(years_of_exp("=7"), Some(7));
        assert_eq!(years_of_exp("n/a"), None);
        assert_eq!(years_of_exp("= 99999999999"), None);
    }

    #[test]
    fn malformed_numbers_become_null() {
        assert_eq!(int("12"), Some(12));
        assert_eq!(int(" 12 "), Some(12));
        assert_eq!(int("12x"), None);
        assert_eq!(int(""), None);
        assert_eq!(float("3.25"), Some(3.25));
        assert_eq!(float("N/A"), None);
        assert_eq!(float("NaN"), None);
        assert_eq!(float("inf"), None);
    }

    #[test]
    fn full_name_is_first_space_last() {
        assert_eq!(full_name(Some("ANN"), Some("LEE")).as_deref(), Some("ANN LEE"));
        assert_eq!(full_name(None, Some("ACME CLINIC")).as_deref(), Some("ACME CLINIC"));
        assert_eq!(full_name(None, None), None);
    }

    #[test]
    fn empty_text_is_null() {
        assert_eq!(text(""), None);
        assert_eq!(text("X"), Some("X"));
    }

    #[test]
    fn imputation_rounds_the_average() {
        assert_eq!(imputed_trx(25, 2), Some(13)); // 12.5 rounds half away from zero
        assert_eq!(imputed_trx(24, 2), Some(12));
        assert_eq!(imputed_trx(0, 0), None);
    }

    #[test]
    fn zip_count_counts_space_separated() {
        assert_eq!(zip_count(Some("10001 10002  10003")), 3);
        assert_eq!(zip_count(Some("")), 0);
        assert_eq!(zip_count(None), 0);
    }

    #[test]
    fn upper_cases_names() {
        assert_eq!(upper("San José"), "SAN JOSÉ");
    }
}
