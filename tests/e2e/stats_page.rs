//! The stats page and its exports: `/stats` loaded in headless Chromium (Debian's `chromium`,
//! installed by tests/setup.sh) renders, from `/stats.json`, the same values `/metrics` shows for
//! the process, each shard, the backend and its server; `/stats.csv` has a row per process,
//! shard, backend and server with the same numbers.

use crate::backend::TestBackend;
use crate::harness::{metric, metrics_text, Server};
use crate::proxy::{on_separate_connections, proxy_config, srv};
use std::process::Command;

/// The page's DOM after its script ran (Chromium's virtual time lets the fetch finish).
fn rendered(url: &str) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ])
        .output()
        .expect("chromium is not installed: run tests/setup.sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of the page's cell for row `row` (`shard/backend/server`) and column `col` (its
/// `data-value`; the text it shows is rounded, and checked to be the same number roughly).
fn cell(dom: &str, row: &str, col: &str) -> Option<f64> {
    let marker = format!("data-row=\"{row}\" data-col=\"{col}\" data-value=\"");
    let at = dom.find(&marker)? + marker.len();
    let rest = &dom[at..];
    let exact: f64 = rest[..rest.find('"')?].parse().ok()?;
    let text = &rest[rest.find('>')? + 1..];
    let shown: f64 = text[..text.find('<')?].trim().parse().ok()?;
    assert!(
        (shown - exact).abs() <= exact.abs() * 1e-3,
        "{row} {col}: shows {shown}, is {exact}"
    );
    Some(exact)
}

#[test]
fn the_page_and_the_csv_show_what_metrics_shows() {
    let b = TestBackend::start();
    let s = Server::start(&proxy_config(&[srv(b.addr(), "name = \"s1\"")], "", ""));
    on_separate_connections(&s, 12);
    // Two slow answers: the backend's response-time quantiles show them.
    for _ in 0..2 {
        let mut c = crate::backend::Client::connect(s.addr());
        c.send(b"GET /delay/150 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.response(false, true).map(|r| r.status), Some(200));
    }
    let admin = s.admin();
    let dom = rendered(&format!("http://{admin}/stats"));
    assert!(
        dom.contains("data-loaded=\"1\""),
        "the page did not load its data:\n{dom}"
    );
    let metrics = metrics_text(admin);
    let want = |key: &str| {
        crate::harness::metric_in(&metrics, key).unwrap_or_else(|| panic!("{key} not in /metrics"))
    };
    for (row, col, key) in [
        (
            "//",
            "coreplex_requests_total{class=2xx}",
            "coreplex_requests_total{class=\"2xx\"}",
        ),
        (
            "//",
            "coreplex_connections_accepted_total",
            "coreplex_connections_accepted_total",
        ),
        (
            "0//",
            "coreplex_shard_requests_total",
            "coreplex_shard_requests_total{shard=\"0\"}",
        ),
        (
            "/app/",
            "coreplex_backend_requests_total",
            "coreplex_backend_requests_total{backend=\"app\"}",
        ),
        (
            "/app/s1",
            "coreplex_backend_connections_new_total",
            "coreplex_backend_connections_new_total{backend=\"app\",server=\"s1\"}",
        ),
        (
            "/app/s1",
            "coreplex_backend_connections_idle{list=safe}",
            "coreplex_backend_connections_idle{backend=\"app\",server=\"s1\",list=\"safe\"}",
        ),
        (
            "/app/",
            "coreplex_backend_response_seconds{quantile=0.999}",
            "coreplex_backend_response_seconds{backend=\"app\",quantile=\"0.999\"}",
        ),
        (
            "/app/",
            "coreplex_backend_response_seconds_count",
            "coreplex_backend_response_seconds_count{backend=\"app\"}",
        ),
    ] {
        assert_eq!(
            cell(&dom, row, col),
            Some(want(key)),
            "page cell {row} {col} against {key}"
        );
    }
    assert_eq!(want("coreplex_requests_total{class=\"2xx\"}"), 14.0);
    assert_eq!(
        want("coreplex_backend_response_seconds_count{backend=\"app\"}"),
        14.0
    );
    let p999 = want("coreplex_backend_response_seconds{backend=\"app\",quantile=\"0.999\"}");
    let p50 = want("coreplex_backend_response_seconds{backend=\"app\",quantile=\"0.5\"}");
    assert!(
        p999 >= 0.15 && p50 < 0.15,
        "response-time quantiles: p50 {p50}, p99.9 {p999}"
    );

    let csv = crate::harness::curl(&["-s", &format!("http://{admin}/stats;csv")]);
    let csv = String::from_utf8_lossy(&csv.stdout).into_owned();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    assert_eq!(&header[..3], ["# shard", "backend", "server"]);
    let col = header
        .iter()
        .position(|c| *c == "coreplex_backend_connections_new_total")
        .expect("the column");
    let row: Vec<&str> = csv
        .lines()
        .find(|l| l.starts_with(",app,s1,"))
        .expect("the server's row")
        .split(',')
        .collect();
    assert_eq!(
        row[col].parse::<f64>().unwrap(),
        metric(
            admin,
            "coreplex_backend_connections_new_total{backend=\"app\",server=\"s1\"}"
        )
    );
    let json = crate::harness::curl(&["-s", &format!("http://{admin}/stats.json")]);
    let json = String::from_utf8_lossy(&json.stdout);
    assert!(
        json.contains(
            "{\"name\":\"coreplex_requests_total\",\"labels\":{\"class\":\"2xx\"},\"value\":14}"
        ),
        "{json}"
    );
}
