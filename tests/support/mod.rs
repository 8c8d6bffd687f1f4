//! Helpers for the HTTP integration tests: a real server with the real engine on
//! 127.0.0.1:0 over a temporary data directory, and a small raw HTTP/1.1 client that can
//! also send malformed requests. Every network wait is bounded by `IO_TIMEOUT`.

#![allow(dead_code)]

use engine::{Affiliate, Campaign, CampaignStatus, Engine, PixelKind, SyncMode};
use server::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound on any one exchange with the server; a hung server fails the test instead
/// of hanging CI. Not a timing assertion: healthy exchanges take milliseconds.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const LANDING: &str = "https://shop.example/land";

/// Campaigns of the test catalog, by what they exercise.
pub const C_PLAIN: u32 = 1;
pub const C_PAUSED: u32 = 2;
pub const C_SECURED: u32 = 3;
pub const C_CUSTOM: u32 = 4;
pub const C_NO_AFID: u32 = 5;
pub const C_EXTRAS: u32 = 6;
pub const C_MULTI: u32 = 7;
pub const C_MREF: u32 = 8;
pub const POSTBACK_TOKEN: &str = "s3cret-token";
pub const AFF: u32 = 7;
pub const AFF_BLOCKED: u32 = 8;
pub const AFF_PIXELS: u32 = 9;

fn campaign(id: u32) -> Campaign {
    Campaign {
        id,
        name: format!("campaign {id}"),
        landing_url: format!("{LANDING}?ref={{click_id}}&a={{affiliate_id}}&s={{sid1}}"),
        revenue: 10.0,
        payout: 4.0,
        ..Campaign::default()
    }
}

/// The catalog every test server starts with.
pub fn config() -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".to_string();
    config.server.public_url = "http://localhost".to_string();
    config.admin.token = ADMIN_TOKEN.to_string();
    config.storage.shards = 2;
    config.storage.sync = SyncMode::Never;
    config.campaigns = vec![
        campaign(C_PLAIN),
        Campaign {
            status: CampaignStatus::Paused,
            ..campaign(C_PAUSED)
        },
        Campaign {
            postback_token: POSTBACK_TOKEN.to_string(),
            postback_ips: vec!["10.9.0.0/16".parse().unwrap()],
            ..campaign(C_SECURED)
        },
        Campaign {
            allow_custom_params: true,
            payout_percent: 10.0,
            ..campaign(C_CUSTOM)
        },
        Campaign {
            allow_afid_posts: false,
            ..campaign(C_NO_AFID)
        },
        Campaign {
            propagate_extras: true,
            landing_url: format!("{LANDING}?ref={{click_id}}&u={{utm_source}}"),
            ..campaign(C_EXTRAS)
        },
        Campaign {
            multiple_conversions: true,
            ..campaign(C_MULTI)
        },
        Campaign {
            dedupe_merchant_ref: true,
            ..campaign(C_MREF)
        },
    ];
    config.affiliates = vec![
        Affiliate {
            id: AFF,
            name: "Acme".into(),
            ..Affiliate::default()
        },
        Affiliate {
            id: AFF_BLOCKED,
            name: "Blocked".into(),
            status: engine::AffiliateStatus::Blocked,
            ..Affiliate::default()
        },
        Affiliate {
            id: AFF_PIXELS,
            name: "Pixels".into(),
            pixels: vec![
                engine::Pixel {
                    kind: PixelKind::Image,
                    url: "https://aff.example/img?c={click_id}&p={payout}".into(),
                    ..engine::Pixel::default()
                },
                engine::Pixel {
                    kind: PixelKind::Js,
                    html: "<script>window.conv='{click_id}'</script>".into(),
                    ..engine::Pixel::default()
                },
            ],
            ..Affiliate::default()
        },
    ];
    config
}

/// A running server. `stop` shuts it down gracefully; dropping it leaves the task to the
/// runtime's end (each test has its own runtime).
pub struct TestServer {
    pub addr: SocketAddr,
    pub engine: Engine,
    pub config: Arc<Config>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(config()).await
    }

    pub async fn start_with(config: Config) -> TestServer {
        Self::start_opening(config, |engine_config| {
            Engine::open(engine_config, Arc::new(engine::SystemClock))
        })
        .await
    }

    /// Starts on a temporary data directory with an engine `open` builds from the config
    /// (tests that need simulated disks open it their way).
    pub async fn start_opening(
        mut config: Config,
        open: impl FnOnce(engine::EngineConfig) -> Result<Engine, engine::Error>,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        config.storage.data_dir = dir.path().to_path_buf();
        let engine_config = engine::EngineConfig {
            storage: config.storage.clone(),
            dispatch: config.dispatch.clone(),
            campaigns: config.campaigns.clone(),
            affiliates: config.affiliates.clone(),
            webhooks: config.webhooks.clone(),
        };
        let engine = open(engine_config).expect("engine opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let config = Arc::new(config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(
            listener,
            engine.clone(),
            config.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        TestServer {
            addr,
            engine,
            config,
            stop: Some(stop),
            task: Some(task),
            dir,
        }
    }

    /// Stops accepting, waits for in-flight requests, then shuts the engine down.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(IO_TIMEOUT, task).await;
            assert!(
                matches!(result, Ok(Ok(Ok(())))),
                "server did not stop cleanly: {result:?}"
            );
        }
        self.engine.shutdown().await;
    }

    /// Signals shutdown without waiting; returns the server task.
    pub fn begin_stop(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().expect("running")
    }

    pub async fn get(&self, target: &str) -> Reply {
        self.request("GET", target, &[], b"").await
    }

    pub async fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        request(self.addr, method, target, headers, body).await
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Reply {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut headers = vec![("Authorization", auth.as_str())];
        if !body.is_empty() {
            headers.push(("Content-Type", "application/json"));
        }
        self.request(method, &format!("/api/v1{path}"), &headers, body.as_bytes())
            .await
    }

    /// A tracked click without redirect (`R=0`): returns the click ID.
    pub async fn click_id(&self, query: &str, headers: &[(&str, &str)]) -> String {
        let reply = self
            .request("GET", &format!("/click.track?{query}&R=0"), headers, b"")
            .await;
        assert_eq!(reply.status, 200, "click {query}: {}", reply.text());
        let id = reply.text();
        assert!(!id.is_empty(), "click {query} returned no click id");
        id
    }

    /// A server post; returns the reply with its JSON.
    pub async fn s2s(&self, query: &str) -> Reply {
        self.get(&format!("/pixel.track?type=s2s&{query}")).await
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim_end().to_string()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    pub fn is_gif(&self) -> bool {
        self.status == 200
            && self.header("content-type") == Some("image/gif")
            && self.body.len() == 43
            && self.body.starts_with(b"GIF89a")
    }
}

pub async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut raw =
        format!("{method} {target} HTTP/1.1\r\nHost: test.invalid\r\nConnection: close\r\n");
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    let mut bytes = raw.into_bytes();
    bytes.extend_from_slice(body);
    send_raw(addr, &bytes)
        .await
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

/// Sends raw bytes, reads until the server closes, parses the response. Write errors are
/// ignored (the server may answer and close before reading everything we send).
pub async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Reply> {
    tokio::time::timeout(IO_TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await?;
        let _ = stream.write_all(bytes).await;
        read_reply(&mut stream).await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))?
}

/// Reads one response: until the server closes, or until a complete `Content-Length`
/// body has arrived.
pub async fn read_reply(stream: &mut TcpStream) -> std::io::Result<Reply> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(reply) = parse_complete(&buf) {
            return Ok(reply);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    parse_complete(&buf).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("incomplete response: {:?}", String::from_utf8_lossy(&buf)),
        )
    })
}

fn parse_complete(buf: &[u8]) -> Option<Reply> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let body = &buf[end + 4..];
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    match length {
        Some(length) if body.len() >= length => Some(Reply {
            status,
            headers,
            body: body[..length].to_vec(),
        }),
        Some(_) => None,
        // 1xx/204/304 and bodiless answers carry no length; we only read such when closed.
        None if (100..200).contains(&status) || status == 204 || status == 304 => Some(Reply {
            status,
            headers,
            body: Vec::new(),
        }),
        None => None,
    }
}

/// The query-string value of `name` in a URL.
pub fn query_value(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded_pairs(query)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

fn form_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    server::params::decode_pairs(query.as_bytes()).unwrap_or_default()
}

/// The value of a Prometheus sample line starting with `prefix` (name and labels).
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The `clicktrail` binary running as a child process, for restart and demo tests.
pub struct Process {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// Every stderr line so far, and the rest as they come.
    pub lines: Vec<String>,
    rest: std::sync::mpsc::Receiver<String>,
}

impl Process {
    /// Starts `clicktrail serve` with `args` and `env`, and waits (bounded) for the line
    /// saying where it listens.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Process {
        use std::io::BufRead;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_clicktrail"));
        command
            .arg("serve")
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("CLICKTRAIL_ADMIN_TOKEN")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn clicktrail");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = Process {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            lines: Vec::new(),
            rest: rx,
        };
        let line = process.wait_for_line("clicktrail listening");
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("listen="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        process.addr = addr;
        process
    }

    /// The first stderr line containing `needle`, waiting (bounded) for it.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        if let Some(line) = self.lines.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            match self.rest.recv_timeout(IO_TIMEOUT) {
                Ok(line) => {
                    self.lines.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no line with {needle:?}; stderr so far:\n{}",
                        self.lines.join("\n")
                    );
                }
            }
        }
    }

    /// SIGKILL: no drain, no sync beyond what was acknowledged.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status. A watchdog SIGKILLs the process if it has not exited
    /// within `IO_TIMEOUT`, so a hung shutdown fails the test instead of hanging it.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let watchdog_pid = pid.clone();
        let watchdog = std::thread::spawn(move || {
            if done_rx.recv_timeout(IO_TIMEOUT).is_err() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &watchdog_pid])
                    .status();
                return true;
            }
            false
        });
        let status = self.child.wait().expect("wait for clicktrail");
        let _ = done_tx.send(());
        let killed = watchdog.join().unwrap_or(false);
        assert!(
            !killed,
            "clicktrail did not exit on SIGTERM; stderr:\n{}",
            self.drain_lines()
        );
        status
    }

    /// Every stderr line received so far.
    pub fn drain_lines(&mut self) -> String {
        while let Ok(line) = self.rest.try_recv() {
            self.lines.push(line);
        }
        self.lines.join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
