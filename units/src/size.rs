//! Byte sizes: a whole number with an optional SI (kB, MB, GB) or IEC (KiB, MiB, GiB) unit.

use crate::error::UnitError;

/// Parses a size as configuration files write it: "50MiB", "2GB", "64KiB",
/// "1000" or "1000B" (bytes). Units are case-insensitive; "k", "m", "g" are SI.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let t = text.trim();
    let err = |reason: &str| UnitError::Size {
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: u64 = num.parse().map_err(|_| err("expected a whole number"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(err(&format!("unknown unit {other:?}"))),
    };
    value.checked_mul(mult).ok_or_else(|| err("too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_common_units() {
        assert_eq!(parse_size("50MiB"), Ok(50 << 20));
        assert_eq!(parse_size("64kib"), Ok(64 << 10));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("1000 B"), Ok(1000));
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["", "MiB", "12 parsecs", "1.5GB", "-1", "99999999999999GiB"] {
            let e = parse_size(bad).expect_err(bad);
            assert!(matches!(&e, UnitError::Size { text, .. } if text == bad));
        }
        assert!(
            parse_size("5x")
                .unwrap_err()
                .to_string()
                .contains("unknown unit \"x\"")
        );
    }
}
