//! The exposition read back for the tests, in two steps: promtool (which
//! runs Prometheus's own text-format parser) must accept it, then a strict
//! reader of format 0.0.4 returns its families, so the tests can compare
//! values and unescaped labels. The reader takes exactly the grammar of the
//! format and panics on anything else, rather than skipping it; promtool
//! keeps it honest, since a text both accept cannot be one Prometheus
//! rejects.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

#[derive(Debug)]
pub struct Family {
    pub name: String,
    pub data_type: MetricType,
    pub samples: Vec<Sample>,
}

#[derive(Debug)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// promtool's exit status when the text parsed and only lint rules (such
/// as a counter without `_total`, which the seed-compatible names are)
/// complained; a text it cannot parse exits 1.
const PROMTOOL_LINT_ONLY: i32 = 3;

/// `Err(report)` when Prometheus's parser, through `promtool check
/// metrics`, rejects `text`; lint complaints alone are not an error here.
pub fn promtool_check(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): `cargo xtask setup` installs it (Debian package prometheus)")
        });
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("writing the exposition to promtool");
    let output = child.wait_with_output().expect("waiting for promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    match output.status.code() {
        Some(0) | Some(PROMTOOL_LINT_ONLY) => Ok(()),
        _ => Err(format!(
            "promtool check metrics: {}: {report}",
            output.status
        )),
    }
}

/// The families of `text`, which promtool must accept first.
pub fn parse_complete(text: &str) -> Vec<Family> {
    if let Err(report) = promtool_check(text) {
        panic!("Prometheus rejects the exposition: {report}\n{text}");
    }
    read(text).unwrap_or_else(|e| panic!("not text format 0.0.4: {e}\n{text}"))
}

/// The strict reader alone: `Err` names the first line it does not take.
pub fn read(text: &str) -> Result<Vec<Family>, String> {
    let mut families: Vec<Family> = Vec::new();
    let mut typed: BTreeMap<String, MetricType> = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", number + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            read_comment(comment, &mut typed, &families).map_err(at)?;
            continue;
        }
        let (name, sample) = read_sample(line).map_err(at)?;
        match families.last_mut() {
            Some(family) if family.name == name => family.samples.push(sample),
            _ => {
                if families.iter().any(|f| f.name == name) {
                    return Err(at(format!("{name} is not one group")));
                }
                let data_type = typed.get(&name).copied().unwrap_or(MetricType::Untyped);
                if !matches!(
                    data_type,
                    MetricType::Counter | MetricType::Gauge | MetricType::Untyped
                ) {
                    return Err(at(format!("{name}: {data_type:?} is not read here")));
                }
                families.push(Family {
                    name,
                    data_type,
                    samples: vec![sample],
                });
            }
        }
    }
    Ok(families)
}

/// `# HELP` and `# TYPE` lines; any other comment is free text.
fn read_comment(
    comment: &str,
    typed: &mut BTreeMap<String, MetricType>,
    families: &[Family],
) -> Result<(), String> {
    let mut words = comment
        .trim_start_matches([' ', '\t'])
        .splitn(3, [' ', '\t']);
    match words.next() {
        Some("HELP") => {
            let name = words.next().ok_or("HELP without a name")?;
            check_name(name, true)?;
            let help = words.next().unwrap_or("");
            let mut chars = help.chars();
            while let Some(c) = chars.next() {
                if c == '\\' && !matches!(chars.next(), Some('\\' | 'n')) {
                    return Err("HELP escapes only \\\\ and \\n".into());
                }
            }
        }
        Some("TYPE") => {
            let name = words.next().ok_or("TYPE without a name")?;
            check_name(name, true)?;
            let data_type = match words.next().map(str::trim) {
                Some("counter") => MetricType::Counter,
                Some("gauge") => MetricType::Gauge,
                Some("histogram") => MetricType::Histogram,
                Some("summary") => MetricType::Summary,
                Some("untyped") => MetricType::Untyped,
                other => return Err(format!("unknown type {other:?}")),
            };
            if families.iter().any(|f| f.name == name) {
                return Err(format!("TYPE of {name} after its samples"));
            }
            if typed.insert(name.to_string(), data_type).is_some() {
                return Err(format!("a second TYPE for {name}"));
            }
        }
        _ => {}
    }
    Ok(())
}

/// `name{label="value",...} value [timestamp]`.
fn read_sample(line: &str) -> Result<(String, Sample), String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    check_name(name, true)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(mut inside) = rest.strip_prefix('{') {
        loop {
            inside = inside.trim_start_matches([' ', '\t']);
            if let Some(after) = inside.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = inside.split_once('=').ok_or("a label without =")?;
            let key = key.trim_end_matches([' ', '\t']);
            check_name(key, false)?;
            let after = after.trim_start_matches([' ', '\t']);
            let after = after
                .strip_prefix('"')
                .ok_or("a label value without quotes")?;
            let (value, after) = read_label_value(after)?;
            if labels.insert(key.to_string(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
            inside = after.trim_start_matches([' ', '\t']);
            if let Some(after) = inside.strip_prefix(',') {
                inside = after;
            } else if !inside.starts_with('}') {
                return Err("labels not separated by ,".into());
            }
        }
    }
    if labels.is_empty() && !rest.starts_with([' ', '\t']) {
        return Err("no blank after the name".into());
    }
    let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
    let value = fields.next().ok_or("no value")?;
    let value = read_float(value).ok_or_else(|| format!("value {value:?} is not a float"))?;
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("timestamp {timestamp:?} is not an integer"))?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp".into());
    }
    Ok((name.to_string(), Sample { labels, value }))
}

/// The value up to its closing quote, unescaped, and the text after it.
fn read_label_value(text: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[index + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                other => return Err(format!("invalid escape {other:?}")),
            },
            c => value.push(c),
        }
    }
    Err("an unterminated label value".into())
}

/// Go's ParseFloat spellings the format allows: decimals, exponents,
/// `NaN`, `+Inf`, `-Inf`.
fn read_float(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ if text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')) =>
        {
            text.parse().ok()
        }
        _ => None,
    }
}

/// A metric name (`:` allowed) or a label name.
fn check_name(name: &str, metric: bool) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (metric && c == ':'));
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (metric && c == ':'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid name"))
    }
}

/// Both steps must refuse each of these, so neither can let through a
/// malformed exposition unseen; the reader also holds the format's rule
/// that a family is one group of lines, which Prometheus does not enforce.
#[test]
fn promtool_and_the_reader_each_reject_a_malformed_exposition() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\n\\\\\"} 3\n";
    promtool_check(good).expect("a well-formed exposition");
    let families = read(good).expect("a well-formed exposition");
    assert_eq!(families[0].samples[0].labels["x"], "q\"\n\\");
    for bad in [
        "a_total{x=\"1\\t\"} 3\n",
        "a_total{x=\"1\"} three\n",
        "a_total{x=\"1} 3\n",
        "a_total{x=1} 3\n",
        "a_total{1x=\"1\"} 3\n",
        "a_total 3 4 5\n",
        "a_total\n",
        "broken line\n",
        "# TYPE a_total counter\n# TYPE a_total gauge\na_total 1\n",
        "# TYPE a_total counted\na_total 1\n",
        "a_total{x=\"1\",x=\"2\"} 3\n",
        "a_total{x=\"1\"} 3 1.5\n",
    ] {
        let text = format!("{good}{bad}");
        assert!(promtool_check(&text).is_err(), "promtool took {bad:?}");
        assert!(read(&text).is_err(), "the reader took {bad:?}");
    }
    let regrouped = format!("{good}b 2\na_total{{x=\"2\"}} 3\n");
    assert!(read(&regrouped).is_err(), "a family in two groups");
    // The blank after `}` is optional to Prometheus, so to the reader.
    let tight = format!("{good}a_total{{x=\"1\"}}3\n");
    promtool_check(&tight).expect("no blank needed after the labels");
    assert_eq!(read(&tight).expect("no blank needed")[0].samples.len(), 2);
}
