//! The metric table: every family (name, help, type) and sample (labels, value) of one scrape,
//! as the renderers describe them. It is the one source of every view: Prometheus text
//! ([`Table::prometheus`]), the JSON and CSV exports ([`Table::json`], [`Table::csv`], rows keyed
//! like HAProxy's `;csv`: one per process, shard, backend and server) and the stats page
//! (`src/stats_page.rs`, which reads the JSON).
//!
//! The renderers write the exposition grammar (`# HELP`, `# TYPE`, `name{label="value"} value`)
//! through [`std::fmt::Write`]; each line becomes a family or a sample as it is written.

use std::fmt::Write;

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series name (a histogram's `_bucket`, `_sum`, `_count` included).
    pub name: String,
    /// Its labels in order.
    pub labels: Vec<(String, String)>,
    /// The value as rendered.
    pub value: String,
}

impl Sample {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A metric family.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Family {
    /// Its name.
    pub name: String,
    /// Its help text.
    pub help: String,
    /// `counter`, `gauge`, `histogram` or `summary`.
    pub kind: String,
    /// Its samples.
    pub samples: Vec<Sample>,
}

/// Every family of one scrape.
#[derive(Debug, Default)]
pub struct Table {
    /// In the order written.
    pub families: Vec<Family>,
    line: String,
}

/// The labels that key a row of the CSV export and the stats page.
pub const ROW_LABELS: [&str; 3] = ["shard", "backend", "server"];

impl Write for Table {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for piece in s.split_inclusive('\n') {
            self.line.push_str(piece);
            if self.line.ends_with('\n') {
                let line = std::mem::take(&mut self.line);
                self.take_line(line.trim_end_matches('\n'));
            }
        }
        Ok(())
    }
}

impl Table {
    fn take_line(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            self.families.push(Family {
                name: name.to_string(),
                help: help.to_string(),
                ..Family::default()
            });
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            match self.families.last_mut() {
                Some(f) if f.name == name => f.kind = kind.to_string(),
                _ => self.families.push(Family {
                    name: name.to_string(),
                    kind: kind.to_string(),
                    ..Family::default()
                }),
            }
        } else if !line.is_empty() {
            let sample = parse_sample(line);
            match self.families.last_mut() {
                Some(f) if sample.name.starts_with(&f.name) => f.samples.push(sample),
                _ => self.families.push(Family {
                    name: sample.name.clone(),
                    samples: vec![sample],
                    ..Family::default()
                }),
            }
        }
    }

    /// The family named `name`.
    #[cfg(test)]
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn prometheus(&self) -> String {
        let mut o = String::with_capacity(16 * 1024);
        for f in &self.families {
            if !f.help.is_empty() {
                let _ = writeln!(o, "# HELP {} {}", f.name, f.help);
            }
            if !f.kind.is_empty() {
                let _ = writeln!(o, "# TYPE {} {}", f.name, f.kind);
            }
            for s in &f.samples {
                o.push_str(&s.name);
                if !s.labels.is_empty() {
                    o.push('{');
                    for (i, (k, v)) in s.labels.iter().enumerate() {
                        if i > 0 {
                            o.push(',');
                        }
                        let _ = write!(o, "{k}=\"{}\"", escape_label(v));
                    }
                    o.push('}');
                }
                let _ = writeln!(o, " {}", s.value);
            }
        }
        o
    }

    /// Every family and sample as JSON: `{"families":[{"name","help","type","samples":[{"name",
    /// "labels":{...},"value"}]}]}` (values are numbers; `NaN` and infinities are `null`).
    pub fn json(&self) -> String {
        let mut o = String::with_capacity(32 * 1024);
        o.push_str("{\"families\":[");
        for (i, f) in self.families.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            let _ = write!(
                o,
                "{{\"name\":{},\"help\":{},\"type\":{},\"samples\":[",
                json_str(&f.name),
                json_str(&f.help),
                json_str(&f.kind)
            );
            for (j, s) in f.samples.iter().enumerate() {
                if j > 0 {
                    o.push(',');
                }
                let _ = write!(o, "{{\"name\":{},\"labels\":{{", json_str(&s.name));
                for (k, (key, v)) in s.labels.iter().enumerate() {
                    if k > 0 {
                        o.push(',');
                    }
                    let _ = write!(o, "{}:{}", json_str(key), json_str(v));
                }
                let _ = write!(o, "}},\"value\":{}}}", json_number(&s.value));
            }
            o.push_str("]}");
        }
        o.push_str("]}\n");
        o
    }

    /// The CSV export, one row per process, shard, backend and server (HAProxy's `;csv` has one
    /// per proxy and server): columns `shard,backend,server`, then one per series, named by
    /// the series and its other labels (`coreplex_backend_responses_total{class=2xx}`). A cell
    /// is empty where the row has no such sample.
    pub fn csv(&self) -> String {
        let (columns, rows) = self.pivot();
        let mut o = String::new();
        o.push_str("# shard,backend,server");
        for c in &columns {
            o.push(',');
            o.push_str(&csv_cell(c));
        }
        o.push('\n');
        for (key, cells) in rows {
            for (i, k) in key.iter().enumerate() {
                if i > 0 {
                    o.push(',');
                }
                o.push_str(&csv_cell(k));
            }
            for c in &columns {
                o.push(',');
                if let Some(v) = cells.get(c) {
                    o.push_str(v);
                }
            }
            o.push('\n');
        }
        o
    }

    /// Columns (first seen first) and rows keyed by their `shard,backend,server` labels.
    #[allow(clippy::type_complexity)]
    pub fn pivot(
        &self,
    ) -> (
        Vec<String>,
        Vec<([String; 3], std::collections::HashMap<String, String>)>,
    ) {
        let mut columns: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut rows: Vec<([String; 3], std::collections::HashMap<String, String>)> = Vec::new();
        for f in &self.families {
            for s in &f.samples {
                let key = ROW_LABELS.map(|l| s.label(l).unwrap_or("").to_string());
                let rest: Vec<String> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| !ROW_LABELS.contains(&k.as_str()))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let column = if rest.is_empty() {
                    s.name.clone()
                } else {
                    format!("{}{{{}}}", s.name, rest.join(","))
                };
                if seen.insert(column.clone()) {
                    columns.push(column.clone());
                }
                let row = match rows.iter().position(|(k, _)| *k == key) {
                    Some(i) => i,
                    None => {
                        rows.push((key, std::collections::HashMap::new()));
                        rows.len() - 1
                    }
                };
                rows[row].1.insert(column, s.value.clone());
            }
        }
        (columns, rows)
    }
}

/// Parses `name{k="v",...} value` (label values may hold `\"`, `\\` and `\n` escapes).
fn parse_sample(line: &str) -> Sample {
    let (series, value) = line.rsplit_once(' ').unwrap_or((line, ""));
    let Some((name, rest)) = series.split_once('{') else {
        return Sample {
            name: series.to_string(),
            labels: Vec::new(),
            value: value.to_string(),
        };
    };
    let mut labels = Vec::new();
    let mut chars = rest.trim_end_matches('}').chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() || chars.next() != Some('"') {
            break;
        }
        let mut v = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => v.push('\n'),
                    Some(other) => v.push(other),
                    None => break,
                },
                '"' => break,
                c => v.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').to_string(), v));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Sample {
        name: name.to_string(),
        labels,
        value: value.to_string(),
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    coreplex_http::json_str(&mut o, s);
    o
}

fn json_number(v: &str) -> String {
    match v.parse::<f64>() {
        Ok(n) if n.is_finite() => v.to_string(),
        _ => "null".into(),
    }
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP a_total As.\n# TYPE a_total counter\na_total 3\n# HELP b Per server.\n# TYPE b gauge\nb{backend=\"app\",server=\"s1\"} 1\nb{backend=\"app\",server=\"s2\"} 2.5\n# HELP c By class.\n# TYPE c counter\nc{backend=\"app\",class=\"2xx\"} 7\n# HELP d Shards.\n# TYPE d gauge\nd{shard=\"0\"} 4\nd{shard=\"1\"} 5\n";

    fn table() -> Table {
        let mut t = Table::default();
        t.write_str(TEXT).unwrap();
        t
    }

    #[test]
    fn the_text_round_trips_through_the_table() {
        let t = table();
        assert_eq!(t.families.len(), 4);
        assert_eq!(
            t.family("b").unwrap().samples[1].label("server"),
            Some("s2")
        );
        assert_eq!(t.prometheus(), TEXT);
    }

    #[test]
    fn csv_rows_are_keyed_by_shard_backend_and_server() {
        let csv = table().csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "# shard,backend,server,a_total,b,c{class=2xx},d");
        assert!(lines.contains(&",,,3,,,"), "{csv}");
        assert!(lines.contains(&",app,s1,,1,,"), "{csv}");
        assert!(lines.contains(&",app,,,,7,"), "{csv}");
        assert!(lines.contains(&"1,,,,,,5"), "{csv}");
    }

    #[test]
    fn json_has_every_sample() {
        let json = table().json();
        assert!(
            json.contains(
                "{\"name\":\"b\",\"labels\":{\"backend\":\"app\",\"server\":\"s2\"},\"value\":2.5}"
            ),
            "{json}"
        );
        assert!(json.starts_with(
            "{\"families\":[{\"name\":\"a_total\",\"help\":\"As.\",\"type\":\"counter\""
        ));
    }
}
