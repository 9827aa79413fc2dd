//! The console in a real browser: sign-in (a wrong password refused, the throttle after
//! repeated failures), the session cookie's flags, and a form without its CSRF token
//! refused. The pages' own tests are in `console_*.rs`; all of them start the daemon
//! with the users of [`console_app`].

use std::sync::LazyLock;

use crate::helpers::{TestApp, prepare_dir, spawn_in};

/// Every console test user's password.
pub const PASSWORD: &str = "Kaffee-und-Kuchen-42";

/// The users: mara (marketing), anna and ben (sales, the shipped owners `anna` and
/// `ben` by their e-mail addresses), root (admin).
pub const USERS: [(&str, &str, &str); 4] = [
    ("mara", "mara@example.com", "marketing"),
    ("anna", "anna.berger@example.com", "sales"),
    ("ben", "ben.okafor@example.com", "sales"),
    ("root", "root@example.com", "admin"),
];

/// One hash for all (argon2id takes a moment per hash).
static HASH: LazyLock<String> =
    LazyLock::new(|| nurtured::config::users::hash_password(PASSWORD).unwrap());

/// The `[[users]]` entries of [`USERS`], with `extra` (TOML) appended to the config.
pub fn users_toml() -> String {
    USERS
        .iter()
        .map(|(name, email, role)| {
            format!(
                "\n[[users]]\nname = \"{name}\"\nemail = \"{email}\"\nrole = \"{role}\"\npassword_hash = \"{}\"\n",
                *HASH
            )
        })
        .collect()
}

/// A daemon with the console users and `extra` TOML appended to its config.
pub async fn console_app(extra: &str) -> TestApp {
    let dir = prepare_dir();
    let path = dir.path().join("nurtured.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(extra);
    text.push_str(&users_toml());
    std::fs::write(&path, text).unwrap();
    spawn_in(dir).await
}

/// A signed-in console session over plain HTTP (for setting up and checking what the
/// browser tests do not show).
pub struct UiClient {
    pub base: String,
    pub client: reqwest::Client,
    /// `nurtured_session=...`
    pub cookie: String,
    pub csrf: String,
}

fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_string())
}

fn set_cookie_line(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

fn attr_after(html: &str, marker: &str) -> Option<String> {
    let at = html.find(marker)? + marker.len();
    Some(html[at..].split('"').next()?.to_string())
}

/// `fields` as an `application/x-www-form-urlencoded` body.
pub fn form(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

/// The sign-in form's token and cookie.
pub async fn login_form(app: &TestApp, client: &reqwest::Client) -> (String, String) {
    let resp = client
        .get(format!("{}/ui/login", app.base))
        .send()
        .await
        .unwrap();
    let cookie = set_cookie(&resp, "nurtured_login").expect("the form sets its cookie");
    let html = resp.text().await.unwrap();
    let token = attr_after(&html, "name=\"token\" value=\"").expect("the form has a token");
    (token, cookie)
}

/// Posts the sign-in form for `name` with `password`: the response (not followed).
pub async fn post_login(app: &TestApp, name: &str, password: &str) -> reqwest::Response {
    post_login_with(app, name, password, "/ui/", &[]).await
}

/// [`post_login`] going on to `next`, with extra request `headers`.
pub async fn post_login_with(
    app: &TestApp,
    name: &str,
    password: &str,
    next: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (token, cookie) = login_form(app, &client).await;
    let mut req = client
        .post(format!("{}/ui/login", app.base))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(form(&[
        ("name", name),
        ("password", password),
        ("token", token.as_str()),
        ("next", next),
    ]))
    .send()
    .await
    .unwrap()
}

impl UiClient {
    /// Signs `name` in with [`PASSWORD`].
    pub async fn sign_in(app: &TestApp, name: &str) -> UiClient {
        let resp = post_login(app, name, PASSWORD).await;
        assert_eq!(resp.status(), 303, "sign-in of {name}");
        let cookie = set_cookie(&resp, "nurtured_session").expect("a session cookie");
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut ui = UiClient {
            base: app.base.clone(),
            client,
            cookie,
            csrf: String::new(),
        };
        let (status, html) = ui.get("/ui/").await;
        assert_eq!(status, 200, "{html}");
        ui.csrf = attr_after(&html, "data-csrf=\"").expect("pages carry the CSRF token");
        ui
    }

    /// GET `path` with the session: the response, for its headers.
    pub async fn fetch(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap()
    }

    /// GET `path`: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = self.fetch(path).await;
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// POSTs a form to `path` (with the CSRF token unless `fields` has a `csrf`):
    /// status and body (redirects are not followed).
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let mut pairs: Vec<(&str, &str)> = fields.to_vec();
        if !fields.iter().any(|(k, _)| *k == "csrf") {
            pairs.push(("csrf", &self.csrf));
        }
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&pairs))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_is_throttled_and_forms_need_their_csrf_token() {
    let app = console_app("").await;
    // A wrong password, an unknown name: refused alike.
    assert_eq!(
        post_login(&app, "mara", "wrong password").await.status(),
        401
    );
    assert_eq!(post_login(&app, "nobody", PASSWORD).await.status(), 401);
    // The right one; the cookie is Secure when the browser came over HTTPS (here a
    // proxy says so), and plain otherwise (a loopback test setup).
    let resp = post_login(&app, "mara", PASSWORD).await;
    let flags = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(flags.contains("; HttpOnly; SameSite=Strict"), "{flags}");
    assert!(!flags.contains("Secure"), "{flags}");
    let resp = post_login_with(
        &app,
        "mara",
        PASSWORD,
        "/ui/",
        &[("x-forwarded-proto", "https")],
    )
    .await;
    let flags = set_cookie_line(&resp, "nurtured_session").unwrap();
    assert!(flags.ends_with("; Secure"), "{flags}");
    let mara = UiClient::sign_in(&app, "mara").await;
    // A form without the token, or with another session's, is refused; with it, it works.
    let (status, body) = mara.post("/ui/logout", &[("csrf", "")]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("security token"), "{body}");
    let root = UiClient::sign_in(&app, "root").await;
    let (status, _) = mara.post("/ui/logout", &[("csrf", &root.csrf)]).await;
    assert_eq!(status, 403);
    let (status, _) = mara.post("/ui/logout", &[]).await;
    assert_eq!(status, 303);
    // Signed out: the old cookie leads to the sign-in page.
    let (status, _) = mara.get("/ui/").await;
    assert_eq!(status, 303);
    // Five failures for one name lock it, even with the right password next.
    for _ in 0..5 {
        assert_eq!(post_login(&app, "ben", "guess").await.status(), 401);
    }
    let locked = post_login(&app, "ben", PASSWORD).await;
    assert_eq!(locked.status(), 429);
    assert!(
        locked
            .text()
            .await
            .unwrap()
            .contains("Too many failed sign-ins")
    );
    // The address made 7 failures: other names are refused from it too.
    assert_eq!(post_login(&app, "anna", PASSWORD).await.status(), 429);
}

/// Signs `name` in through the browser's sign-in form and waits for the overview.
pub async fn browser_sign_in(b: &crate::browser::Session, base: &str, name: &str) {
    b.goto(&format!("{base}/ui/login")).await;
    b.fill("#name", name).await;
    b.fill("#password", PASSWORD).await;
    b.click_and_load("#sign-in").await;
    b.wait_for("#logout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_with_the_right_password_only_and_is_throttled() {
    use crate::browser::{Options, Session};
    if crate::browser::skipped("the console's sign-in") {
        return;
    }
    let app = console_app("").await;
    let base = app.base.clone();
    let b = Session::start().await;

    // A page of the console leads to the sign-in form, and back after signing in.
    b.goto(&format!("{base}/ui/")).await;
    b.wait_for("#login-form").await;
    assert!(b.url().await.contains("/ui/login?next=%2Fui%2F"));
    b.fill("#name", "mara").await;
    b.fill("#password", "not her password").await;
    b.click_and_load("#sign-in").await;
    let refused = b.wait_for("#login-message").await;
    assert_eq!(refused.text().await.unwrap(), "Name or password is wrong.");
    assert!(b.cookie("nurtured_session").await.is_none());
    b.screenshot("login-refused").await;

    b.fill("#name", "mara").await;
    b.fill("#password", PASSWORD).await;
    b.click_and_load("#sign-in").await;
    b.wait_for("#tile-events").await;
    assert!(b.url().await.ends_with("/ui/"), "{}", b.url().await);
    let cookie = b
        .cookie("nurtured_session")
        .await
        .expect("a session cookie");
    assert!(cookie.http_only, "{cookie:?}");
    assert_eq!(cookie.same_site.as_deref(), Some("Strict"), "{cookie:?}");
    assert_eq!(cookie.path.as_deref(), Some("/ui"), "{cookie:?}");
    // Scripts on the page cannot read it.
    let seen = b.execute("return document.cookie", vec![]).await;
    assert!(
        !seen.as_str().unwrap_or("").contains("nurtured_session"),
        "{seen}"
    );
    b.screenshot("overview").await;

    // A form sent without its CSRF token (removed from the page here, as a forged form
    // from another site would lack it) is refused and changes nothing: still signed in.
    b.execute(
        "document.querySelector('form.who input[name=csrf]').remove(); return null",
        vec![],
    )
    .await;
    b.click_and_load("#logout").await;
    let refused = b.wait_for("#error-message").await;
    assert!(
        refused.text().await.unwrap().contains("security token"),
        "{}",
        b.source().await
    );
    assert!(b.text("h1").await.starts_with("403"));
    b.screenshot("csrf-refused").await;
    b.goto(&format!("{base}/ui/")).await;
    b.wait_for("#tile-events").await;

    // Signing out ends the session.
    b.click_and_load("#logout").await;
    b.wait_for("#login-form").await;
    b.goto(&format!("{base}/ui/")).await;
    b.wait_for("#login-form").await;

    // The keyboard alone signs in: the name field has the focus, Tab leads to the
    // password, Enter sends the form; Tab from the page's start reaches the skip link.
    for text in ["mara", "\u{E004}", PASSWORD, "\u{E007}"] {
        // Tab (E004) and Enter (E007) in WebDriver's key codes.
        let active = b.client().active_element().await.unwrap();
        active.send_keys(text).await.unwrap();
    }
    b.wait_for("#tile-events").await;
    b.click_and_load("#logout").await;
    b.wait_for("#login-form").await;

    // Five wrong passwords in a row lock sign-in, even with the right password next.
    for _ in 0..5 {
        b.fill("#name", "mara").await;
        b.fill("#password", "guessing").await;
        b.click_and_load("#sign-in").await;
        b.wait_for("#login-message").await;
    }
    b.fill("#name", "mara").await;
    b.fill("#password", PASSWORD).await;
    b.click_and_load("#sign-in").await;
    let locked = b.wait_for("#login-message").await;
    let text = locked.text().await.unwrap();
    assert!(text.starts_with("Too many failed sign-ins"), "{text}");
    assert!(b.cookie("nurtured_session").await.is_none());
    b.screenshot("login-locked").await;
    b.close().await;

    // A German browser on a phone gets the German console.
    let app = console_app("").await;
    let b = Session::start_with(Options::phone().lang("de-DE")).await;
    browser_sign_in(&b, &app.base, "anna").await;
    assert_eq!(b.text("#logout").await, "Abmelden");
    assert!(b.text("h1").await.contains("Heute"));
    b.screenshot("overview-phone-de").await;
    b.close().await;
}

/// Runs `nurtured user add ARGS` in `dir` with `input` on standard input.
fn user_add(dir: &std::path::Path, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nurtured"))
        .args(["user", "add"])
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove(nurtured::store::testing::POSTGRES_ENV)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_prints_an_entry_the_daemon_signs_in_with() {
    let dir = prepare_dir();
    // Two different lines, a short password, an unknown role: refused, nothing printed.
    for (args, input, why) in [
        (
            &["ida", "--role", "admin"][..],
            "Passwort-eins-1\nPasswort-zwei-2\n",
            "the two passwords differ",
        ),
        (&["ida", "--role", "admin"][..], "kurz\nkurz\n", "too short"),
        (
            &["ida", "--role", "boss"][..],
            "Passwort-eins-1\nPasswort-eins-1\n",
            "not a role",
        ),
        (
            &["ida", "--role", "admin"][..],
            "Passwort-eins-1\n",
            "before the second password",
        ),
    ] {
        let out = user_add(dir.path(), args, input);
        assert_eq!(out.status.code(), Some(1), "{}", crate::helpers::text(&out));
        assert!(out.stdout.is_empty(), "{}", crate::helpers::text(&out));
        assert!(
            crate::helpers::text(&out).contains(why),
            "{}",
            crate::helpers::text(&out)
        );
    }
    let out = user_add(
        dir.path(),
        &[
            "ida",
            "--role",
            "sales",
            "--email",
            "Ben.Okafor@example.com",
            "--language",
            "de",
        ],
        "Passwort-eins-1\nPasswort-eins-1\n",
    );
    assert!(out.status.success(), "{}", crate::helpers::text(&out));
    let entry = String::from_utf8(out.stdout).unwrap();
    assert!(entry.contains("role = \"sales\""), "{entry}");
    assert!(
        entry.contains("email = \"ben.okafor@example.com\""),
        "{entry}"
    );
    assert!(entry.contains("password_hash = \"$argon2id$"), "{entry}");
    assert!(!entry.contains("Passwort-eins-1"), "{entry}");
    // Pasted into the config, it signs in: a sales user who owns ben's handoffs, in German.
    let path = dir.path().join("nurtured.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push('\n');
    text.push_str(&entry);
    std::fs::write(&path, text).unwrap();
    let app = spawn_in(dir).await;
    let resp = post_login_with(&app, "ida", "Passwort-eins-1", "/ui/board", &[]).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/ui/board");
    let session = set_cookie(&resp, "nurtured_session").unwrap();
    let page = reqwest::Client::new()
        .get(format!("{}/ui/", app.base))
        .header("cookie", session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("meine offenen Übergaben"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_addr_serves_the_console_alone_on_a_listener_of_its_own() {
    let app = console_app("\n[ui]\naddr = \"127.0.0.1:0\"\n").await;
    let ui = app
        .running
        .as_ref()
        .unwrap()
        .ui_addr
        .expect("the console's own listener");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            client
                .get(format!("http://{ui}{path}"))
                .send()
                .await
                .unwrap()
        }
    };
    let root = get("/").await;
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()["location"], "/ui/");
    assert_eq!(get("/ui/login").await.status(), 200);
    assert_eq!(get("/ui/assets/htmx.min.js").await.status(), 200);
    // Only the console: not the API, not the links in mails.
    assert_eq!(get("/v1/stats").await.status(), 404);
    assert_eq!(get("/healthz").await.status(), 404);
    // A session made on one listener holds on the other (one key, one throttle).
    let mara = UiClient::sign_in(&app, "mara").await;
    let page = client
        .get(format!("http://{ui}/ui/"))
        .header("cookie", &mara.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
}
