//! A minimal W3C WebDriver client: chromedriver's HTTP API (JSON over HTTP, through ureq)
//! driving a headless Chromium, with just what the web app's browser test needs: navigate,
//! find by CSS, click, type (file uploads too), pointer actions, run scripts, screenshots,
//! the browser's console log.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The key of a web element reference in WebDriver's JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session on a chromedriver this process started. Dropping it ends
/// the session (closing the browser) and kills chromedriver.
pub struct Browser {
    agent: ureq::Agent,
    base: String,
    session: String,
    driver: Child,
    _profile: TempDir,
}

/// A found element (its WebDriver id).
#[derive(Clone, Debug)]
pub struct Element(pub String);

impl Element {
    fn json(&self) -> Value {
        json!({ ELEMENT: self.0 })
    }
}

/// An HTTP client for local servers: no proxy from the environment, a 60 s limit per call;
/// `status_errors`: whether 4xx/5xx answers are errors (WebDriver's carry JSON to read).
pub fn agent(status_errors: bool) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(status_errors)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().unwrap().port()
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session. Panics
    /// (never skips) when Chromium or chromedriver is not installed.
    pub fn start() -> Self {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: the web app's browser test needs Chromium and its driver \
                 (Debian/Ubuntu: `sudo apt-get install -y chromium chromium-driver`)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let agent = agent(false);
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().expect("a temporary browser profile");
        let mut browser = Self {
            agent,
            base,
            session: String::new(),
            driver,
            _profile: profile,
        };
        browser.wait_ready();
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", browser._profile.path().display()),
            "--window-size=1400,1000",
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}});
        let url = format!("{}/session", browser.base);
        let value = browser
            .request("POST", &url, Some(caps))
            .unwrap_or_else(|e| panic!("starting a Chromium session: {e}"));
        browser.session = value["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        browser
    }

    /// Waits for chromedriver to answer `/status` with ready.
    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            let url = format!("{}/status", self.base);
            if let Ok(v) = self.request("GET", &url, None)
                && v["ready"] == true
            {
                return;
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!("chromedriver exited at start-up: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not become ready in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One WebDriver call; the response's `value`, or the error WebDriver reported.
    fn request(&self, method: &str, url: &str, body: Option<Value>) -> Result<Value, String> {
        let resp = match method {
            "GET" => self.agent.get(url).call(),
            "DELETE" => self.agent.delete(url).call(),
            _ => self.agent.post(url).send_json(body.unwrap_or(json!({}))),
        };
        let mut resp = resp.map_err(|e| format!("{method} {url}: {e}"))?;
        let status = resp.status();
        let mut v: Value = resp
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_json()
            .map_err(|e| format!("{method} {url}: reading the answer: {e}"))?;
        let value = v["value"].take();
        if !status.is_success() {
            let message = value["message"]
                .as_str()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("");
            return Err(format!("{method} {url}: {} ({message})", value["error"]));
        }
        Ok(value)
    }

    /// A command on this session (`path` after `/session/{id}`).
    pub fn try_cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        self.request(method, &url, body)
    }

    pub fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_cmd(method, path, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn try_find(&self, css: &str) -> Option<Element> {
        let v = self
            .try_cmd(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .ok()?;
        Some(Element(v[ELEMENT].as_str()?.to_string()))
    }

    pub fn find(&self, css: &str) -> Element {
        self.try_find(css)
            .unwrap_or_else(|| panic!("no element matches {css:?}"))
    }

    /// Scrolls the element to the middle of the window (clear of the sticky header) and
    /// clicks it; retries briefly while it is being re-rendered or covered.
    pub fn click(&self, css: &str) {
        let start = Instant::now();
        loop {
            let result = self
                .try_find(css)
                .ok_or_else(|| format!("no element matches {css:?}"))
                .and_then(|e| {
                    self.scroll_to(&e);
                    self.try_cmd("POST", &format!("/element/{}/click", e.0), Some(json!({})))
                });
            match result {
                Ok(_) => return,
                Err(e) if start.elapsed() > Duration::from_secs(5) => panic!("clicking {css}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    pub fn scroll_to(&self, e: &Element) {
        let _ = self.try_cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": "arguments[0].scrollIntoView({block: 'center'})", "args": [e.json()] })),
        );
    }

    /// Types into an element; for `input[type=file]` the text is a file's absolute path.
    pub fn send_keys(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        );
    }

    /// Replaces an input's value by typing.
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.scroll_to(&e);
        self.cmd("POST", &format!("/element/{}/clear", e.0), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        );
    }

    /// Picks an option of a `<select>` by value, as a user does (clicking the option).
    pub fn select(&self, select_css: &str, value: &str) {
        self.click(&format!("{select_css} option[value=\"{value}\"]"));
    }

    /// Runs a script synchronously (`return` gives its value).
    pub fn script(&self, script: &str, args: &[Value]) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    pub fn try_script(&self, script: &str) -> Result<Value, String> {
        self.try_cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// A pointer drag (real input events) through `points`, in viewport pixels.
    pub fn drag(&self, points: &[(f64, f64)]) {
        let mut actions = Vec::new();
        for (i, &(x, y)) in points.iter().enumerate() {
            actions.push(json!({ "type": "pointerMove", "origin": "viewport",
                "x": x.round() as i64, "y": y.round() as i64, "duration": if i == 0 { 0 } else { 60 } }));
            if i == 0 {
                actions.push(json!({ "type": "pointerDown", "button": 0 }));
            }
        }
        actions.push(json!({ "type": "pointerUp", "button": 0 }));
        let body = json!({ "actions": [{ "type": "pointer", "id": "mouse",
            "parameters": { "pointerType": "mouse" }, "actions": actions }] });
        self.cmd("POST", "/actions", Some(body));
        let _ = self.try_cmd("DELETE", "/actions", None);
    }

    /// Saves a screenshot of the window as a PNG.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().expect("base64 text"));
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// The browser console since the last call: (level, source, message).
    pub fn console(&self) -> Vec<(String, String, String)> {
        let v = self
            .try_cmd("POST", "/se/log", Some(json!({ "type": "browser" })))
            .unwrap_or(Value::Null);
        v.as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
                (s("level"), s("source"), s("message"))
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let url = format!("{}/session/{}", self.base, self.session);
            let _ = self.request("DELETE", &url, None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (RFC 4648, padded) to bytes; panics on other characters.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {:?}", c as char),
        }
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | value(c) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
