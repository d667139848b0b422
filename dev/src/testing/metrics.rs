//! Reading Prometheus text pages, and checking them with `promtool`.

use super::assert_success;
use std::io::Write;
use std::process::Command;

/// The value of one series (`name{labels}` as printed) in a Prometheus text page (0 if
/// absent).
pub fn metric(page: &str, series: &str) -> f64 {
    samples(page)
        .find(|(s, _)| *s == series)
        .and_then(|(_, value)| value)
        .unwrap_or(0.0)
}

/// The sum of every series of a metric.
pub fn metric_total(page: &str, name: &str) -> f64 {
    samples(page)
        .filter(|(series, _)| metric_name(series) == name)
        .filter_map(|(_, value)| value)
        .sum()
}

/// A page's samples: each line but comments, split into its series and its value (None if
/// the value does not parse).
fn samples(page: &str) -> impl Iterator<Item = (&str, Option<f64>)> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(series, value)| (series, value.trim().parse().ok()))
}

/// `name` of `name{labels}`.
fn metric_name(series: &str) -> &str {
    series.split_once('{').map_or(series, |(name, _)| name)
}

/// `promtool check metrics` on an exposition page; panics with its report on problems.
pub fn assert_promtool_accepts(page: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test installs it)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(page.as_bytes())
        .expect("writing to promtool");
    let out = promtool.wait_with_output().expect("promtool runs");
    assert_success("promtool check metrics", &out);
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"1\"} 2\nx_total{a=\"2\"} 3.5\nx_total_other 7\ny 4\n";

    #[test]
    fn one_series_or_the_sum_of_a_metric() {
        assert_eq!(metric(PAGE, "y"), 4.0);
        assert_eq!(metric(PAGE, r#"x_total{a="2"}"#), 3.5);
        assert_eq!(metric(PAGE, "absent"), 0.0);
        assert_eq!(metric_total(PAGE, "x_total"), 5.5);
        assert_eq!(metric_total(PAGE, "y"), 4.0);
    }
}
