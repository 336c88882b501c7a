//! A parser for the text exposition the collector serves.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parsed text exposition (enough of it for label values without escapes).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, String>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut metrics = Metrics::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                metrics.types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap();
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            metrics.samples.push(Sample {
                name: name.to_string(),
                labels,
                value: value.parse().unwrap(),
            });
        }
        metrics
    }

    /// Samples of `name` whose labels include every pair in `selector`.
    pub fn select<'a>(
        &'a self,
        name: &'a str,
        selector: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && selector
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The single value of `name{selector}`; 0 when absent (a counter not yet seen).
    pub fn value(&self, name: &str, selector: &[(&str, &str)]) -> f64 {
        let matches: Vec<_> = self.select(name, selector).collect();
        assert!(
            matches.len() <= 1,
            "{name}{selector:?} matches {} series",
            matches.len()
        );
        matches.first().map_or(0.0, |s| s.value)
    }

    pub fn interfaces(&self) -> std::collections::BTreeSet<String> {
        self.select("network_interface_stats_mtu", &[])
            .map(|s| s.labels["interface"].clone())
            .collect()
    }
}

/// What moved between two readings of the same series, by key: each key
/// whose value changed, with the difference (a key new in `after` counts
/// from zero).
pub fn changed<K: Ord + Clone>(
    before: &BTreeMap<K, f64>,
    after: &BTreeMap<K, f64>,
) -> BTreeMap<K, f64> {
    after
        .iter()
        .map(|(key, value)| (key.clone(), value - before.get(key).copied().unwrap_or(0.0)))
        .filter(|(_, delta)| *delta != 0.0)
        .collect()
}
