//! Interface name filters with node_exporter's semantics: one regex, either
//! include or exclude, matched unanchored (`eth` matches `veth0`); anchor
//! with `^...$` to match whole names.

use regex::Regex;

#[derive(Debug, Clone, Default)]
pub enum InterfaceFilter {
    #[default]
    All,
    Include(Regex),
    Exclude(Regex),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("--include and --exclude are mutually exclusive (as in node_exporter); give one")]
    Both,
    #[error("--{flag}: invalid regex `{pattern}`: {reason}")]
    Regex {
        flag: &'static str,
        pattern: String,
        reason: String,
    },
}

impl InterfaceFilter {
    pub fn new(include: Option<&str>, exclude: Option<&str>) -> Result<Self, FilterError> {
        let compile = |flag: &'static str, pattern: &str| {
            Regex::new(pattern).map_err(|e| FilterError::Regex {
                flag,
                pattern: pattern.to_string(),
                reason: e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            })
        };
        match (include, exclude) {
            (Some(_), Some(_)) => Err(FilterError::Both),
            (Some(pattern), None) => Ok(InterfaceFilter::Include(compile("include", pattern)?)),
            (None, Some(pattern)) => Ok(InterfaceFilter::Exclude(compile("exclude", pattern)?)),
            (None, None) => Ok(InterfaceFilter::All),
        }
    }

    pub fn keeps(&self, interface: &str) -> bool {
        match self {
            InterfaceFilter::All => true,
            InterfaceFilter::Include(regex) => regex.is_match(interface),
            InterfaceFilter::Exclude(regex) => !regex.is_match(interface),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unanchored_like_node_exporter_unless_anchored() {
        let exclude = InterfaceFilter::new(None, Some("^(veth.*|[a-f0-9]{15})$")).unwrap();
        assert!(!exclude.keeps("veth1234"));
        assert!(!exclude.keeps("0123456789abcde"));
        assert!(exclude.keeps("eth0"));
        let include = InterfaceFilter::new(Some("eth"), None).unwrap();
        assert!(include.keeps("eth0") && include.keeps("veth0") && !include.keeps("lo"));
    }

    #[test]
    fn errors_name_the_flag() {
        assert_eq!(
            InterfaceFilter::new(Some("a"), Some("b")).unwrap_err(),
            FilterError::Both
        );
        let error = InterfaceFilter::new(None, Some("("))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("--exclude: invalid regex `(`"), "{error}");
    }
}
