//! National Provider Identifiers: 10 digits, the last a Luhn check digit computed over the
//! 9-digit identifier prefixed with the card issuer prefix "80840" (45 CFR 162.406; the CMS
//! "NPI check digit" note: double the alternate digits of the 9-digit identifier starting from
//! the right, sum all digits, add the constant 24 that stands for the prefix 80840).

/// Luhn check digit of a 9-digit NPI base (the NPI standard's "80840" prefix included).
pub fn npi_check_digit(base9: u64) -> u8 {
    debug_assert!((100_000_000..1_000_000_000).contains(&base9));
    let mut sum = 24u32; // the prefix 80840 contributes 24
    let mut x = base9;
    let mut double = true; // rightmost digit of the base is doubled (the check digit follows)
    while x > 0 {
        let mut d = (x % 10) as u32;
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
        x /= 10;
    }
    ((10 - sum % 10) % 10) as u8
}

/// Whether a 10-digit number is a valid NPI (Luhn with the "80840" prefix).
pub fn is_valid_npi(npi: u64) -> bool {
    (1_000_000_000..10_000_000_000).contains(&npi) && npi_check_digit(npi / 10) == (npi % 10) as u8
}

/// Whether a 10-character string is a valid NPI.
pub fn is_valid_npi_str(s: &str) -> bool {
    s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit()) && is_valid_npi(s.parse().unwrap_or(0))
}

const SPACE: u64 = 200_000_000; // bases 100000000..=299999999 (NPIs start with 1 or 2)
const MULT: u64 = 122_949_829; // odd and not a multiple of 5: a bijection mod 2^9 * 5^8

/// The NPI of prescriber `index` (distinct for all indices below 200,000,000).
pub(crate) fn npi_for_index(index: u64, seed: u64) -> u64 {
    let offset = crate::gen::splitmix64(seed ^ 0x4E50_4931) % SPACE;
    let base = 100_000_000 + ((index % SPACE) * MULT + offset) % SPACE;
    base * 10 + u64::from(npi_check_digit(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_npis() {
        // the example from the CMS check-digit note
        assert_eq!(npi_check_digit(123_456_789), 3);
        assert!(is_valid_npi(1_234_567_893));
        assert!(!is_valid_npi(1_234_567_894));
        // full Luhn over "80840" + NPI agrees
        for base in [123_456_789u64, 100_000_000, 299_999_999, 187_654_321] {
            let npi = base * 10 + u64::from(npi_check_digit(base));
            let digits: Vec<u32> = format!("80840{npi}").bytes().map(|b| u32::from(b - b'0')).collect();
            let mut sum = 0;
            for (i, d) in digits.iter().rev().enumerate() {
                let mut d = *d;
                if i % 2 == 1 {
                    d *= 2;
                    if d > 9 {
                        d -= 9;
                    }
                }
                sum += d;
            }
            assert_eq!(sum % 10, 0, "{npi}");
        }
    }

    #[test]
    fn distinct() {
        let mut v: Vec<u64> = (0..100_000).map(|i| npi_for_index(i, 42)).collect();
        assert!(v.iter().all(|&n| is_valid_npi(n)));
        v.sort_unstable();
        v.dedup();
        assert_eq!(v.len(), 100_000);
    }
}
