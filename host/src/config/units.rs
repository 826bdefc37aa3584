//! Human units in config files: durations (`100ms`, `7d`) and sizes (`64MiB`).

use std::time::Duration;

/// Parse `"100ms"`, `"10s"`, `"7d"`, `"1h 30m"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("`{s}` is not a duration ({e}); write e.g. \"100ms\", \"10s\", \"7d\"")
    })
}

/// Parse `"64MiB"`, `"512KiB"`, `"1GiB"`, `"1000000"` (bytes), `"10MB"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size; write e.g. \"64MiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "`{s}`: unknown size unit `{other}` (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Serde helpers for fields written as human units.
pub(crate) mod serde_units {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }

    /// A TOML value written either as a number or as a string.
    #[derive(Deserialize)]
    #[serde(untagged)]
    pub enum NumberOrString {
        N(u64),
        S(String),
    }

    pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match NumberOrString::deserialize(d)? {
            NumberOrString::N(n) => Ok(n),
            NumberOrString::S(s) => super::parse_size(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("10 KB").unwrap(), 10_000);
        assert!(parse_size("12 parsecs").unwrap_err().contains("parsecs"));
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert!(parse_duration("soon").is_err());
    }
}
