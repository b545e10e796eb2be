//! Duration strings in attributes: `"500ms"`, `"30s"`, `"1h30m"`, `"2d"`.

/// Parses `"500ms"`, `"30s"`, `"5m"`, `"1h30m"`, `"2d"` into milliseconds.
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    let hint = "expected a number followed by `ms`, `s`, `m`, `h` or `d`, such as \"500ms\"";
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("empty string; {hint}"));
    }
    let mut total: u64 = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(format!("`{text}`: {hint}"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is out of range"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let factor = match &rest[..unit_len] {
            "ms" => 1,
            "s" | "sec" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{text}` has no unit; {hint}")),
            unit => return Err(format!("unknown unit `{unit}` in `{text}`; {hint}")),
        };
        rest = rest[unit_len..].trim_start();
        total = number
            .checked_mul(factor)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("`{text}` is out of range"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration(" 2m 5s "), Ok(125_000));
        assert_eq!(parse_duration("2d"), Ok(172_800_000));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("5 days").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
        assert!(parse_duration("18446744073709551615h").is_err());
    }
}
