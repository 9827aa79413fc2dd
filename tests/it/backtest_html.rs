//! The backtest's HTML report in a real browser: headless Chromium opens the page
//! rendered from a sample report, takes a screenshot (its path is printed) and dumps
//! the DOM, which must hold the SVG charts and every section.
//!
//! Chromium is required (`scripts/test` installs it); `NURTURED_TEST_NO_BROWSER=1`
//! skips the test with a message. [`check_page`] takes any page, e.g. the output of
//! `nurtured backtest --html FILE`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The browser: `NURTURED_TEST_CHROMIUM`, else the first of the usual names found.
fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("NURTURED_TEST_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
    .chain([PathBuf::from("/usr/bin/chromium")])
    .find(|p| p.is_file())
}

/// Runs Chromium headless on `url` with `args`, at most two minutes; its stdout.
fn run_browser(browser: &Path, profile: &Path, args: &[String], url: &str) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1200,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", browser.display()));
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("browser status") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("{} did not finish within two minutes", browser.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr);
    assert!(
        status.success(),
        "{} failed: {status}\n{stderr}",
        browser.display()
    );
    reader.join().expect("reader")
}

/// Opens `page` in Chromium: the screenshot decodes and is not blank, and the DOM
/// holds at least `charts` charts and every section. Returns the screenshot's path.
pub fn check_page(page: &Path, screenshot: &Path, charts: usize) -> PathBuf {
    let browser = chromium().expect(
        "Chromium is needed for the HTML report test: install it (apt-get install chromium; \
         scripts/test does) or set NURTURED_TEST_NO_BROWSER=1 to skip",
    );
    let profile = tempfile::tempdir().expect("profile dir");
    let url = format!("file://{}", page.canonicalize().expect("page").display());
    let _ = std::fs::remove_file(screenshot);
    run_browser(
        &browser,
        profile.path(),
        &[format!("--screenshot={}", screenshot.display())],
        &url,
    );

    // The screenshot: a PNG of the window's size with a real picture on it.
    let file = std::fs::File::open(screenshot).expect("the browser wrote a screenshot");
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a size")];
    let info = reader.next_frame(&mut buf).expect("the PNG decodes");
    assert_eq!((info.width, info.height), (1200, 2400));
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.line_size * info.height as usize]
        .chunks(channels)
        .collect();
    let background = pixels[0];
    let differ = pixels.iter().filter(|p| **p != background).count();
    let mut colours: Vec<&[u8]> = pixels.clone();
    colours.sort_unstable();
    colours.dedup();
    assert!(
        differ * 20 > pixels.len(),
        "the screenshot is nearly blank: {differ} of {} pixels differ from the corner",
        pixels.len()
    );
    assert!(colours.len() > 50, "only {} colours", colours.len());
    // The chart colours are on it (baseline blue #5b7db1, candidate orange #e07b39).
    for (name, rgb) in [
        ("baseline", [0x5b, 0x7d, 0xb1]),
        ("candidate", [0xe0, 0x7b, 0x39]),
    ] {
        let n = pixels.iter().filter(|p| p[..3] == rgb).count();
        assert!(n > 500, "{name} bars: only {n} pixels of their colour");
    }

    // The DOM: charts drawn as SVG, every section there, nothing loaded from elsewhere.
    let dom = run_browser(&browser, profile.path(), &["--dump-dom".to_string()], &url);
    let svgs = dom.matches("<svg").count();
    let rects = dom.matches("<rect").count();
    assert!(
        svgs >= charts,
        "{svgs} charts in the DOM, {charts} expected"
    );
    assert!(rects > 20, "{rects} bars in the DOM");
    for heading in [
        "At a glance",
        "Leads per stage at the end",
        "Against real outcomes",
        "Calibration: conversion rate per score decile",
        "Rule lines that fired",
        "Mails per template",
        "Handoffs to sales per team",
        "What the candidate changes",
    ] {
        assert!(dom.contains(heading), "no section `{heading}` in the DOM");
    }
    assert!(!dom.contains("<script"), "the page has a script");
    println!("backtest report screenshot: {}", screenshot.display());
    println!("charts: {svgs} SVG, {rects} bars");
    screenshot.to_path_buf()
}

#[test]
fn the_backtest_report_opens_in_chromium_with_its_charts() {
    if std::env::var("NURTURED_TEST_NO_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("\n!!! SKIPPED: the HTML report in Chromium (NURTURED_TEST_NO_BROWSER=1) !!!\n");
        return;
    }
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backtest-report.json");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sample).expect("sample")).expect("JSON");
    let page = nurtured::backtest::html::render(&report);
    // Kept after the test, next to the screenshot, for a look.
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("backtest-report");
    std::fs::create_dir_all(&out).unwrap();
    let html = out.join("report.html");
    std::fs::write(&html, &page).unwrap();
    // Stages, two calibration charts and the handoffs per team.
    let shot = check_page(&html, &out.join("report.png"), 4);
    println!("backtest report page: {}", html.display());
    assert!(shot.exists());
}
