//! The quality report (`report.html`) of a scored run, looked at in headless Chromium: it
//! renders (a screenshot of a real size), every chart is an SVG in the DOM, and no script
//! error or console error occurs. A deliberately broken copy must be caught by the same
//! checks, so the test cannot pass on a page that does not work.
//!
//! Needs `chromium` on PATH (`scripts/chromium.sh` installs it; `scripts/test.sh` calls it),
//! or RENKETSU_CHROMIUM set to a Chromium binary.

use renketsu_e2e::{bin, repo};
use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("RENKETSU_CHROMIUM") {
        return PathBuf::from(p);
    }
    let out = Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "headless Chromium is needed for the report test: run scripts/chromium.sh (or set RENKETSU_CHROMIUM)"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Runs Chromium headless on `page` with `extra` arguments; returns (stdout, stderr).
fn headless(page: &Path, extra: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.push(format!("--user-data-dir={}", profile.path().display()));
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.push(format!("file://{}", page.display()));
    let out = Command::new(chromium()).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What the browser saw: SVG count after scripts ran, and script/console errors.
struct Seen {
    svgs: usize,
    js_errors: usize,
    console_errors: Vec<String>,
}

fn look(page: &Path) -> Seen {
    let (dom, stderr) = headless(page, &["--dump-dom"]);
    let attr = |name: &str| -> Option<usize> {
        let key = format!("{name}=\"");
        let i = dom.find(&key)? + key.len();
        dom[i..].split('"').next()?.parse().ok()
    };
    Seen {
        svgs: attr("data-svg-count").unwrap_or(0),
        js_errors: attr("data-js-errors").unwrap_or(0),
        console_errors: stderr
            .lines()
            .filter(|l| l.contains(":CONSOLE") && (l.contains("Uncaught") || l.contains("rror")))
            .map(str::to_owned)
            .collect(),
    }
}

#[test]
fn report_renders_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .env("RENKETSU_KEY_STORE", &keys)
            .env_remove("RENKETSU_KEK")
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "renketsu {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["keys", "init", "--project", "report"]);
    let out = dir.path().join("out");
    run(&[
        "link",
        "-q",
        "--project",
        "report",
        "--schema",
        "schemas/jp-person.toml",
        "--input",
        "a=samples/jp_a.csv",
        "--input",
        "b=samples/jp_b.csv",
        "--today",
        "2026-11-22",
        "--out",
        out.to_str().unwrap(),
    ]);
    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    for forbidden in ["<link", "src=\"http", "href=\"http", "@import"] {
        assert!(
            !html.contains(forbidden),
            "report must be standalone: {forbidden}"
        );
    }
    // Charts in the file: weight histogram, P/R curve, cluster sizes, one m/u chart per
    // comparison of the schema (6).
    let expected_svgs = html.matches("<svg").count();
    assert!(expected_svgs >= 9, "{expected_svgs} charts");

    let seen = look(&page);
    assert_eq!(seen.svgs, expected_svgs, "every SVG is in the rendered DOM");
    assert_eq!(seen.js_errors, 0, "script errors in the report");
    assert!(
        seen.console_errors.is_empty(),
        "console: {:?}",
        seen.console_errors
    );

    // A screenshot of a real page: a PNG of the window size, not a blank image.
    let shot = dir.path().join("report.png");
    headless(
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1000,2000",
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1000, 2000));
    let blank = dir.path().join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let blank_shot = dir.path().join("blank.png");
    headless(
        &blank,
        &[
            &format!("--screenshot={}", blank_shot.display()),
            "--window-size=1000,2000",
        ],
    );
    let blank_len = std::fs::metadata(&blank_shot).unwrap().len();
    assert!(
        png.len() as u64 > 10 * blank_len,
        "the report's screenshot ({} bytes) must hold far more than a blank page's ({blank_len})",
        png.len()
    );

    // The same checks catch a broken page.
    let broken = dir.path().join("broken.html");
    std::fs::write(
        &broken,
        html.replacen("<svg", "<svg data-x", 1)
            .replace("</body>", "<script>notDefinedAnywhere();</script></body>"),
    )
    .unwrap();
    let seen = look(&broken);
    assert_eq!(seen.js_errors, 1);
    assert!(!seen.console_errors.is_empty());
}
