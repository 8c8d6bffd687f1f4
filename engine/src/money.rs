//! Money: exact integer micro-units inside the engine (no drift when summing millions of
//! payouts), `f64` only at the API edge.

/// Micro-units per currency unit.
pub const MICROS_PER_UNIT: i64 = 1_000_000;
/// Largest accepted amount, in units: far above any real payout, and small enough that
/// sums over billions of conversions cannot overflow an `i64` of micro-units.
pub const MAX_AMOUNT_UNITS: f64 = 1_000_000_000.0;

/// Converts an API amount to micro-units; `None` when negative, not finite or too large.
pub fn to_micros(amount: f64) -> Option<i64> {
    if !amount.is_finite() || !(0.0..=MAX_AMOUNT_UNITS).contains(&amount) {
        return None;
    }
    Some((amount * MICROS_PER_UNIT as f64).round() as i64)
}

pub fn to_f64(micros: i64) -> f64 {
    micros as f64 / MICROS_PER_UNIT as f64
}

/// `percent` % of `micros`, rounded to the nearest micro-unit.
pub fn percent_of(micros: i64, percent: f64) -> i64 {
    (micros as f64 * percent / 100.0).round() as i64
}

/// Decimal text for macros: at least two decimals, no trailing zeros beyond them
/// (`4.00`, `4.125`).
pub fn format(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let units = abs / MICROS_PER_UNIT as u64;
    let frac = abs % MICROS_PER_UNIT as u64;
    let mut frac_text = format!("{frac:06}");
    while frac_text.len() > 2 && frac_text.ends_with('0') {
        frac_text.pop();
    }
    format!("{sign}{units}.{frac_text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_are_exact_and_bounded() {
        assert_eq!(to_micros(4.0), Some(4_000_000));
        assert_eq!(to_micros(0.1), Some(100_000));
        assert_eq!(to_micros(-0.01), None);
        assert_eq!(to_micros(f64::NAN), None);
        assert_eq!(to_micros(f64::INFINITY), None);
        assert_eq!(to_micros(2e9), None);
        assert_eq!(percent_of(25_000_000, 10.0), 2_500_000);
        for (m, text) in [
            (4_000_000, "4.00"),
            (4_125_000, "4.125"),
            (1, "0.000001"),
            (0, "0.00"),
        ] {
            assert_eq!(format(m), text);
        }
    }
}
