//! The command line: `check` on good, bad and missing files (every error with its key path,
//! exit code 2), `run` on a bad file, and `--help`.

use crate::harness::{run_cli, temp_path, write_temp};

const BAD: &str = r#"version = 1
bogus_key = 1

[defaults.timeouts]
client = "5 parsecs"

[[listener]]
bind = "not-an-address"

[[listener.route]]
path = "/"
respond = { status = 42 }
"#;

const BAD_PATHS: [&str; 4] = [
    "bogus_key",
    "listener[0].bind",
    "listener[0].route[0].respond.status",
    "defaults.timeouts.client",
];

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_reports_bad(o: &std::process::Output, file: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit status; stderr:\n{err}");
    for p in BAD_PATHS {
        let want = format!("error: {file}: {p}: ");
        assert!(
            err.lines().any(|l| l.starts_with(&want)),
            "no `{want}` line in stderr:\n{err}"
        );
    }
}

#[test]
fn check_accepts_every_example() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let o = run_cli(&["check", "-c", path.to_str().unwrap()]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{}: stderr:\n{}",
            path.display(),
            stderr(&o)
        );
        assert!(
            out.contains("configuration OK"),
            "{}: stdout: {out}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 4, "examples/*.toml: {n}");
}

#[test]
fn check_reports_every_error_with_its_path() {
    let path = write_temp("bad.toml", BAD);
    let file = path.to_string_lossy().into_owned();
    let o = run_cli(&["check", "-c", &file]);
    let _ = std::fs::remove_file(&path);
    assert_reports_bad(&o, &file);
}

#[test]
fn check_missing_file() {
    let path = temp_path("does-not-exist.toml");
    let file = path.to_string_lossy().into_owned();
    let o = run_cli(&["check", "-c", &file]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(&file), "stderr:\n{}", stderr(&o));
}

#[test]
fn run_rejects_a_bad_config() {
    let path = write_temp("bad-run.toml", BAD);
    let file = path.to_string_lossy().into_owned();
    let o = run_cli(&["run", "-c", &file]);
    let _ = std::fs::remove_file(&path);
    assert_reports_bad(&o, &file);
}

#[test]
fn check_accepts_port_zero_for_listener_and_admin() {
    let text =
        "version = 1\n[admin]\nbind = \"127.0.0.1:0\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n";
    let path = write_temp("port0.toml", text);
    let file = path.to_string_lossy().into_owned();
    let o = run_cli(&["check", "-c", &file]);
    let _ = std::fs::remove_file(&path);
    assert!(
        o.status.success(),
        "two port-0 binds are not a conflict; stderr:\n{}",
        stderr(&o)
    );
}

#[test]
fn help_lists_subcommands() {
    let o = run_cli(&["--help"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    for cmd in ["run", "check"] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(cmd)),
            "--help does not list `{cmd}`:\n{out}"
        );
    }
}
