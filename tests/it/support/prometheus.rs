//! A strict reader of Prometheus' text exposition format (version 0.0.4),
//! as node_exporter's textfile collector takes it: it refuses what the
//! collector would, so a test that reads a metrics file through it shows
//! the file would be collected.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One sample: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a file, and each family's HELP and TYPE.
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    pub help: HashMap<String, String>,
    pub types: HashMap<String, String>,
}

impl Exposition {
    /// The value of the one sample of `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.samples.iter().filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        });
        let first = found.next()?;
        assert!(found.next().is_none(), "more than one {name} {labels:?}");
        Some(first.value)
    }
}

fn is_name(name: &str, colons: bool) -> bool {
    let mut chars = name.chars();
    let first_ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
    chars.next().is_some_and(first_ok) && chars.all(|c| first_ok(c) || c.is_ascii_digit())
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse::<f64>()
            .map_err(|_| format!("{text:?} is not a value")),
    }
}

/// Reads `name{labels} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value in {line:?}"))?;
    let name = &line[..name_end];
    if !is_name(name, true) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        loop {
            let start = chars.peek().map(|(i, _)| *i).ok_or("labels not closed")?;
            if body[start..].starts_with('}') {
                rest = &body[start + 1..];
                break;
            }
            let eq = body[start..].find('=').ok_or("label without =")? + start;
            let label = &body[start..eq];
            if !is_name(label, false) {
                return Err(format!("bad label name {label:?}"));
            }
            if !body[eq + 1..].starts_with('"') {
                return Err(format!("label {label} value not quoted"));
            }
            while chars.peek().is_some_and(|(i, _)| *i <= eq + 1) {
                chars.next();
            }
            let mut value = String::new();
            loop {
                match chars.next().ok_or("label value not closed")?.1 {
                    '\\' => match chars.next().ok_or("escape at the end")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => return Err(format!("bad escape \\{other}")),
                    },
                    '"' => break,
                    '\n' => return Err("line end in a label value".into()),
                    c => value.push(c),
                }
            }
            if labels.insert(label.to_owned(), value).is_some() {
                return Err(format!("label {label} given twice"));
            }
            match chars.peek() {
                Some((_, ',')) => {
                    chars.next();
                }
                Some((_, '}')) => {}
                _ => return Err("labels must be separated by commas".into()),
            }
        }
    }
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if !rest.starts_with(' ') || fields.is_empty() || fields.len() > 2 {
        return Err(format!(
            "want ` value [timestamp]` after the name in {line:?}"
        ));
    }
    let value = parse_value(fields[0])?;
    if let Some(ts) = fields.get(1) {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses a whole file, or says what is wrong and on which line.
pub fn parse(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the last line has no line end".into());
    }
    let mut out = Exposition::default();
    let mut finished_families = HashSet::new();
    let mut current: Option<String> = None;
    let mut series = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}", n + 1);
        if line.is_empty() {
            continue;
        }
        let family = if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.trim_start().splitn(3, ' ').collect();
            match words.as_slice() {
                ["HELP", name, help] | ["TYPE", name, help] => {
                    if !is_name(name, true) {
                        return Err(at(format!("bad metric name {name:?}")));
                    }
                    if out
                        .samples
                        .iter()
                        .any(|s| family_of(&s.name, &out.types) == *name)
                    {
                        return Err(at(format!("{} for {name} after its samples", words[0])));
                    }
                    let map = match words[0] {
                        "HELP" => &mut out.help,
                        _ => {
                            if !["counter", "gauge", "histogram", "summary", "untyped"]
                                .contains(help)
                            {
                                return Err(at(format!("unknown type {help:?}")));
                            }
                            &mut out.types
                        }
                    };
                    if map.insert(name.to_string(), help.to_string()).is_some() {
                        return Err(at(format!("second {} for {name}", words[0])));
                    }
                    name.to_string()
                }
                ["HELP", ..] | ["TYPE", ..] => return Err(at("HELP or TYPE incomplete".into())),
                _ => continue,
            }
        } else {
            let sample = parse_sample(line).map_err(at)?;
            let key = (sample.name.clone(), format!("{:?}", sample.labels));
            if !series.insert(key) {
                return Err(at(format!(
                    "{} {:?} given twice",
                    sample.name, sample.labels
                )));
            }
            let family = family_of(&sample.name, &out.types).to_owned();
            out.samples.push(sample);
            family
        };
        if current.as_deref() != Some(family.as_str()) {
            if finished_families.contains(&family) {
                return Err(at(format!("the lines of {family} are not together")));
            }
            if let Some(previous) = current.replace(family.clone()) {
                finished_families.insert(previous);
            }
        }
    }
    Ok(out)
}

/// The family a sample belongs to (a histogram's `_bucket` and so on
/// belong to the name its TYPE gives).
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types
                .get(base)
                .is_some_and(|t| t == "histogram" || t == "summary")
            {
                return base;
            }
        }
    }
    name
}

#[test]
fn the_reader_refuses_what_the_collector_would() {
    let good = "# HELP a_b An a.\n# TYPE a_b gauge\na_b{x=\"1\\\"\"} 2\na_b{x=\"2\"} +Inf\n";
    let parsed = parse(good).unwrap();
    assert_eq!(parsed.value("a_b", &[("x", "1\"")]), Some(2.0));
    for bad in [
        "a_b 1",                                 // no line end
        "a-b 1\n",                               // bad name
        "a_b{x=1} 1\n",                          // unquoted label
        "a_b{x=\"1\"} one\n",                    // bad value
        "a_b 1\na_b 2\n",                        // same series twice
        "a_b 1\n# TYPE a_b gauge\n",             // TYPE after samples
        "# TYPE a_b gauge\n# TYPE a_b gauge\n",  // TYPE twice
        "# TYPE a_b gauges\n",                   // unknown type
        "a_b{x=\"1\"} 1\nc 1\na_b{x=\"2\"} 1\n", // family split
        "a_b{x=\"1\",x=\"2\"} 1\n",              // label twice
        "a_b{x=\"1\\q\"} 1\n",                   // bad escape
    ] {
        assert!(parse(bad).is_err(), "{bad:?} was taken");
    }
}
