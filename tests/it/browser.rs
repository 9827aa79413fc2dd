//! Headless Chromium driven over WebDriver, for tests of the web console.
//!
//! [`Session`] is the async API: it starts `chromedriver` on a free loopback port
//! as a child process, opens a headless Chromium session with a fresh profile
//! folder, and offers small helpers that panic with a clear message on failure,
//! which suits tests. [`Browser`] wraps a [`Session`] together with its own
//! current-thread tokio runtime, so synchronous `#[test]` functions call the
//! same helpers as blocking methods.
//!
//! ```ignore
//! let b = Browser::start();
//! b.goto(&format!("{base}/ui/login"));
//! b.fill("#name", "mara");
//! b.submit("form");
//! b.wait_for("#tile-events");
//! b.screenshot("overview");
//! ```
//!
//! Chromium and chromedriver come from Debian's `chromium` and
//! `chromium-driver` packages (`scripts/test` installs them). At most one
//! browser runs at a time in the test process: a second [`Session::start`]
//! waits until the first is closed, so parallel tests do not starve each other
//! on a small machine.
//!
//! The WebDriver client talks plain HTTP to the loopback chromedriver, so
//! fantoccini is built without TLS (`default-features = false`) and connects
//! through hyper-util's `HttpConnector`.

// Not every test uses every helper.
#![allow(dead_code)]

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Semaphore, SemaphorePermit};

/// How long [`Session::wait_for`] waits by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// How long chromedriver may take to answer `/status` after its start.
const DRIVER_START: Duration = Duration::from_secs(30);

/// How long Chromium may take to start and open the session.
const SESSION_START: Duration = Duration::from_secs(60);

/// How long closing the session may take before the processes are killed.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How much of the page source a timeout message shows.
const SOURCE_EXCERPT: usize = 3000;

const INSTALL_HINT: &str = "install Debian's `chromium` and `chromium-driver` packages \
     (`apt-get install -y chromium chromium-driver`; scripts/test does it)";

/// One browser at a time in the test process.
static BROWSER_SLOT: Semaphore = Semaphore::const_new(1);

/// Window size and language of the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Window width in CSS pixels.
    pub width: u32,
    /// Window height in CSS pixels.
    pub height: u32,
    /// Browser language such as `de-DE`; `None` keeps Chromium's default.
    pub lang: Option<String>,
    /// Emulate a phone: the viewport is exactly `width` x `height` (headless
    /// Chromium windows are at least 500 pixels wide), touch events are on and
    /// `<meta name="viewport">` is honoured, as on a real phone.
    pub mobile: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            width: 1280,
            height: 900,
            lang: None,
            mobile: false,
        }
    }
}

impl Options {
    /// A desktop window of 1280x900 (its viewport is 1280x757).
    pub fn desktop() -> Self {
        Self::default()
    }

    /// An emulated phone with a 390x844 viewport (see [`Options::mobile`]).
    pub fn phone() -> Self {
        Self {
            width: 390,
            height: 844,
            mobile: true,
            ..Self::default()
        }
    }

    /// Sets the window size.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.width = width;
        self.height = height;
        self
    }

    /// Sets the browser language (`--lang` and the `intl.accept_languages`
    /// preference), e.g. `de-DE`.
    pub fn lang(mut self, lang: &str) -> Self {
        self.lang = Some(lang.to_string());
        self
    }

    fn capabilities(&self, chromium: &Path, profile: &Path) -> Capabilities {
        let mut args = vec![
            "--headless".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-background-networking".to_string(),
            "--no-first-run".to_string(),
            "--disable-sync".to_string(),
            "--disable-dev-shm-usage".to_string(),
            format!("--window-size={},{}", self.width, self.height),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut chrome = json!({
            "binary": chromium.display().to_string(),
        });
        if let Some(lang) = &self.lang {
            args.push(format!("--lang={lang}"));
            chrome["prefs"] = json!({ "intl.accept_languages": accept_languages(lang) });
        }
        if self.mobile {
            chrome["mobileEmulation"] = json!({
                "deviceMetrics": {
                    "width": self.width,
                    "height": self.height,
                    "pixelRatio": 1.0,
                    "mobile": true,
                    "touch": true,
                },
            });
        }
        chrome["args"] = json!(args);
        let mut caps = Capabilities::new();
        caps.insert("browserName".to_string(), json!("chrome"));
        caps.insert("goog:chromeOptions".to_string(), chrome);
        caps
    }
}

/// `de-DE` becomes `de-DE,de`, so pages that match on the bare language see it too.
fn accept_languages(lang: &str) -> String {
    match lang.split_once('-') {
        Some((base, _)) => format!("{lang},{base}"),
        None => lang.to_string(),
    }
}

/// A cookie as the browser stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieInfo {
    /// Cookie name.
    pub name: String,
    /// Cookie value.
    pub value: String,
    /// Whether the cookie carries the `HttpOnly` flag.
    pub http_only: bool,
    /// Whether the cookie carries the `Secure` flag.
    pub secure: bool,
    /// `Strict`, `Lax` or `None`, as the browser reports it.
    pub same_site: Option<String>,
    /// Cookie path, when the browser reports one.
    pub path: Option<String>,
}

/// Finds a program on `PATH` under one of `names`, else at `fallback`.
fn find_program(names: &[&str], fallback: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let fallback = PathBuf::from(fallback);
    fallback.is_file().then_some(fallback)
}

/// True (and a loud line on standard error) when `NURTURED_TEST_NO_BROWSER=1` asks to
/// skip the browser tests; `what` names the test.
pub fn skipped(what: &str) -> bool {
    let skip = std::env::var("NURTURED_TEST_NO_BROWSER").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("\n!!! SKIPPED: {what} in Chromium (NURTURED_TEST_NO_BROWSER=1) !!!\n");
    }
    skip
}

/// Paths of chromedriver and Chromium; panics with an install hint when either is missing.
pub fn find_browser() -> (PathBuf, PathBuf) {
    let driver = find_program(&["chromedriver"], "/usr/bin/chromedriver").unwrap_or_else(|| {
        panic!("chromedriver not found on PATH nor at /usr/bin/chromedriver: {INSTALL_HINT}")
    });
    let chromium = find_program(&["chromium", "chromium-browser"], "/usr/bin/chromium")
        .unwrap_or_else(|| {
            panic!("chromium not found on PATH nor at /usr/bin/chromium: {INSTALL_HINT}")
        });
    (driver, chromium)
}

/// The chromedriver child process and the profile folder of its browser.
///
/// Dropping it kills chromedriver's whole process group (chromedriver and the
/// Chromium processes it started) and removes the folder.
struct Driver {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Driver {
    fn spawn(driver: &Path, lang: Option<&str>) -> Driver {
        let dir = tempfile::Builder::new()
            .prefix("console-browser-")
            .tempdir()
            .expect("create temporary folder for the browser");
        std::fs::create_dir(dir.path().join("profile")).expect("create the browser profile folder");
        let log = std::fs::File::create(dir.path().join("chromedriver.log"))
            .expect("create the chromedriver log file");
        let port = free_port();
        let mut command = Command::new(driver);
        command
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log)
            // Own process group, so that Drop also reaches the browser processes.
            .process_group(0);
        if let Some(lang) = lang {
            // Chromium on Linux takes its UI language from the environment.
            let underscored = lang.replace('-', "_");
            command
                .env("LANGUAGE", underscored.clone())
                .env("LANG", format!("{underscored}.UTF-8"));
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}; {INSTALL_HINT}", driver.display()));
        Driver { child, port, dir }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn profile(&self) -> PathBuf {
        self.dir.path().join("profile")
    }

    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let start = log.len().saturating_sub(SOURCE_EXCERPT);
        log[log.ceil_char_boundary(start)..].to_string()
    }

    /// Waits until chromedriver answers `GET /status` with `"ready": true`.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + DRIVER_START;
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "chromedriver exited early ({status}); its log:\n{}",
                    self.log_tail()
                );
            }
            if driver_ready(self.port).await {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "chromedriver did not answer /status within {DRIVER_START:?}; its log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The TempDir field removes the profile folder after this.
    }
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free loopback port")
}

/// Whether chromedriver on `port` answers `GET /status` with `"ready": true`.
///
/// chromedriver keeps the connection open after its answer, so the reply is
/// read until the flag shows up, for at most one second.
async fn driver_ready(port: u16) -> bool {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            reply.extend_from_slice(&chunk[..n]);
            let compact: String = String::from_utf8_lossy(&reply).split_whitespace().collect();
            if compact.contains("\"ready\":true") {
                return Ok(true);
            }
        }
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Ok(true))
    )
}

/// Folder that [`Session::screenshot`] writes to: `target/tmp/console` in the package.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp/console")
}

/// A WebDriver session on headless Chromium (async API).
///
/// Call [`Session::close`] at the end; dropping it without that still kills
/// the processes and removes the profile folder.
pub struct Session {
    client: Option<Client>,
    // Declared after the client: the processes outlive the client handle.
    driver: Driver,
    _slot: SemaphorePermit<'static>,
}

impl Session {
    /// Starts chromedriver and a desktop-sized browser.
    pub async fn start() -> Session {
        Session::start_with(Options::default()).await
    }

    /// Starts chromedriver and a browser with the given window size and language.
    pub async fn start_with(options: Options) -> Session {
        let (driver_path, chromium) = find_browser();
        let slot = BROWSER_SLOT
            .acquire()
            .await
            .expect("the browser semaphore is never closed");
        let mut driver = Driver::spawn(&driver_path, options.lang.as_deref());
        driver.wait_ready().await;
        let caps = options.capabilities(&chromium, &driver.profile());
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps);
        let url = driver.url();
        let client = match tokio::time::timeout(SESSION_START, builder.connect(&url)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!(
                "open a Chromium session: {e}; chromedriver log:\n{}",
                driver.log_tail()
            ),
            Err(_) => panic!(
                "Chromium did not start within {SESSION_START:?}; chromedriver log:\n{}",
                driver.log_tail()
            ),
        };
        Session {
            client: Some(client),
            driver,
            _slot: slot,
        }
    }

    /// The fantoccini client, for anything the helpers do not cover.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("session already closed")
    }

    /// Navigates to `url` and waits for the page load.
    pub async fn goto(&self, url: &str) {
        self.client()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// The first element matching the CSS `selector`; panics when there is none.
    pub async fn find(&self, selector: &str) -> Element {
        match self.client().find(Locator::Css(selector)).await {
            Ok(element) => element,
            Err(e) => self.fail(&format!("find {selector:?}: {e}")).await,
        }
    }

    /// All elements matching the CSS `selector`.
    pub async fn find_all(&self, selector: &str) -> Vec<Element> {
        self.client()
            .find_all(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("find_all {selector:?}: {e}"))
    }

    /// Whether an element matches the CSS `selector` right now.
    pub async fn exists(&self, selector: &str) -> bool {
        !self.find_all(selector).await.is_empty()
    }

    /// Clicks the first element matching the CSS `selector`.
    pub async fn click(&self, selector: &str) {
        let element = self.find(selector).await;
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {selector:?}: {e}"));
    }

    /// Clicks the element matching `selector` and waits until the browser has loaded
    /// the next page (a form sent, a link followed): elements of the old page are not
    /// mistaken for the new page's.
    pub async fn click_and_load(&self, selector: &str) {
        self.execute("window.__nurturedOldPage = true; return null", vec![])
            .await;
        self.click(selector).await;
        let started = std::time::Instant::now();
        loop {
            let loaded = self
                .client()
                .execute(
                    "return window.__nurturedOldPage === undefined && document.readyState === 'complete'",
                    vec![],
                )
                .await
                .ok()
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if loaded {
                return;
            }
            if started.elapsed() > DEFAULT_WAIT {
                panic!(
                    "no new page loaded within {DEFAULT_WAIT:?} after clicking {selector:?} on {}",
                    self.url().await
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Clears the form field matching the CSS `selector` and types `value` into it.
    pub async fn fill(&self, selector: &str, value: &str) {
        let element = self.find(selector).await;
        element
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear {selector:?}: {e}"));
        element
            .send_keys(value)
            .await
            .unwrap_or_else(|e| panic!("type into {selector:?}: {e}"));
    }

    /// Submits the form matching the CSS `selector` by clicking its submit
    /// button, or through `requestSubmit()` when it has none.
    pub async fn submit(&self, form_selector: &str) {
        let form = self.find(form_selector).await;
        let button = form
            .find(Locator::Css(
                "button[type=submit], input[type=submit], button:not([type])",
            ))
            .await;
        match button {
            Ok(button) => button
                .click()
                .await
                .unwrap_or_else(|e| panic!("click the submit button of {form_selector:?}: {e}")),
            Err(_) => {
                self.client()
                    .execute("arguments[0].requestSubmit()", vec![json!(form)])
                    .await
                    .unwrap_or_else(|e| panic!("submit {form_selector:?}: {e}"));
            }
        }
    }

    /// The rendered text of the first element matching the CSS `selector`.
    pub async fn text(&self, selector: &str) -> String {
        let element = self.find(selector).await;
        element
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of {selector:?}: {e}"))
    }

    /// An attribute of the first element matching the CSS `selector`.
    pub async fn attr(&self, selector: &str, name: &str) -> Option<String> {
        let element = self.find(selector).await;
        element
            .attr(name)
            .await
            .unwrap_or_else(|e| panic!("attribute {name:?} of {selector:?}: {e}"))
    }

    /// The current page's HTML.
    pub async fn source(&self) -> String {
        self.client()
            .source()
            .await
            .unwrap_or_else(|e| panic!("page source: {e}"))
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.client()
            .current_url()
            .await
            .map(String::from)
            .unwrap_or_else(|e| panic!("current URL: {e}"))
    }

    /// Waits up to [`DEFAULT_WAIT`] for an element matching the CSS `selector`.
    pub async fn wait_for(&self, selector: &str) -> Element {
        self.wait_for_timeout(selector, DEFAULT_WAIT).await
    }

    /// Waits up to `timeout` for an element matching the CSS `selector`;
    /// panics with the URL and a page source excerpt when none appears.
    pub async fn wait_for_timeout(&self, selector: &str, timeout: Duration) -> Element {
        let found = self
            .client()
            .wait()
            .at_most(timeout)
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(selector))
            .await;
        match found {
            Ok(element) => element,
            Err(fantoccini::error::CmdError::WaitTimeout) => {
                self.fail(&format!(
                    "no element matches {selector:?} after {timeout:?}"
                ))
                .await
            }
            Err(e) => self.fail(&format!("wait for {selector:?}: {e}")).await,
        }
    }

    /// Runs `script` in the page (as a function body; `arguments[i]` are
    /// `args`) and returns its `return` value.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.client()
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("execute script: {e}\n{script}"))
    }

    /// All cookies visible to the current page, `HttpOnly` ones included.
    pub async fn cookies(&self) -> Vec<CookieInfo> {
        let cookies = self
            .client()
            .get_all_cookies()
            .await
            .unwrap_or_else(|e| panic!("get cookies: {e}"));
        cookies
            .iter()
            .map(|c| CookieInfo {
                name: c.name().to_string(),
                value: c.value().to_string(),
                http_only: c.http_only().unwrap_or(false),
                secure: c.secure().unwrap_or(false),
                same_site: c.same_site().map(|s| s.to_string()),
                path: c.path().map(str::to_string),
            })
            .collect()
    }

    /// The cookie called `name`, if the browser holds one for the current page.
    pub async fn cookie(&self, name: &str) -> Option<CookieInfo> {
        self.cookies().await.into_iter().find(|c| c.name == name)
    }

    /// Resizes the window.
    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.client()
            .set_window_size(width, height)
            .await
            .unwrap_or_else(|e| panic!("set window size {width}x{height}: {e}"));
    }

    /// Saves a PNG of the viewport as `target/tmp/console/NAME.png` in the
    /// package and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .client()
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&png))
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Panics with `message`, the current URL and the start of the page source.
    async fn fail(&self, message: &str) -> ! {
        let url = self
            .client()
            .current_url()
            .await
            .map(String::from)
            .unwrap_or_else(|e| format!("(unknown: {e})"));
        let source = self
            .client()
            .source()
            .await
            .unwrap_or_else(|e| format!("(unavailable: {e})"));
        let end = source.floor_char_boundary(SOURCE_EXCERPT);
        let more = if end < source.len() { "\n[...]" } else { "" };
        panic!(
            "{message}\nURL: {url}\npage source:\n{}{more}",
            &source[..end]
        );
    }

    /// Ends the WebDriver session, then stops chromedriver and removes the profile.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.close()).await;
        }
    }
}

/// A [`Session`] with its own tokio runtime, for synchronous tests.
///
/// Each method blocks on the [`Session`] method of the same name. Create and
/// drop it outside any tokio runtime; inside async code use [`Session`].
pub struct Browser {
    session: Option<Session>,
    // Declared last: the runtime must outlive the session.
    rt: tokio::runtime::Runtime,
}

impl Browser {
    /// Starts a desktop-sized browser (1280x900).
    pub fn start() -> Browser {
        Browser::start_with(Options::default())
    }

    /// Starts a browser with the given window size and language.
    pub fn start_with(options: Options) -> Browser {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build a tokio runtime for the browser");
        let session = rt.block_on(Session::start_with(options));
        Browser {
            session: Some(session),
            rt,
        }
    }

    /// The async session, e.g. `b.block_on(b.session().find("#x"))`.
    pub fn session(&self) -> &Session {
        self.session.as_ref().expect("browser already closed")
    }

    /// Runs a future on the browser's runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.rt.block_on(future)
    }

    /// See [`Session::goto`].
    pub fn goto(&self, url: &str) {
        self.block_on(self.session().goto(url))
    }

    /// See [`Session::find`].
    pub fn find(&self, selector: &str) -> Element {
        self.block_on(self.session().find(selector))
    }

    /// See [`Session::exists`].
    pub fn exists(&self, selector: &str) -> bool {
        self.block_on(self.session().exists(selector))
    }

    /// See [`Session::click`].
    pub fn click(&self, selector: &str) {
        self.block_on(self.session().click(selector))
    }

    /// See [`Session::fill`].
    pub fn fill(&self, selector: &str, value: &str) {
        self.block_on(self.session().fill(selector, value))
    }

    /// See [`Session::submit`].
    pub fn submit(&self, form_selector: &str) {
        self.block_on(self.session().submit(form_selector))
    }

    /// See [`Session::text`].
    pub fn text(&self, selector: &str) -> String {
        self.block_on(self.session().text(selector))
    }

    /// See [`Session::attr`].
    pub fn attr(&self, selector: &str, name: &str) -> Option<String> {
        self.block_on(self.session().attr(selector, name))
    }

    /// See [`Session::source`].
    pub fn source(&self) -> String {
        self.block_on(self.session().source())
    }

    /// See [`Session::url`].
    pub fn url(&self) -> String {
        self.block_on(self.session().url())
    }

    /// See [`Session::wait_for`].
    pub fn wait_for(&self, selector: &str) -> Element {
        self.block_on(self.session().wait_for(selector))
    }

    /// See [`Session::wait_for_timeout`].
    pub fn wait_for_timeout(&self, selector: &str, timeout: Duration) -> Element {
        self.block_on(self.session().wait_for_timeout(selector, timeout))
    }

    /// See [`Session::execute`].
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.block_on(self.session().execute(script, args))
    }

    /// See [`Session::cookies`].
    pub fn cookies(&self) -> Vec<CookieInfo> {
        self.block_on(self.session().cookies())
    }

    /// See [`Session::cookie`].
    pub fn cookie(&self, name: &str) -> Option<CookieInfo> {
        self.block_on(self.session().cookie(name))
    }

    /// See [`Session::set_window_size`].
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.block_on(self.session().set_window_size(width, height))
    }

    /// See [`Session::screenshot`].
    pub fn screenshot(&self, name: &str) -> PathBuf {
        self.block_on(self.session().screenshot(name))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            // Never panic here: a panic while a failed test unwinds would abort.
            let rt = &self.rt;
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rt.block_on(session.close());
            }));
        }
    }
}
