//! The physical limits of clicktrail's HTTP stack, for `benches/http/run.sh` to measure
//! clicktrail against.
//!
//! **Bare mode** (`baseline [LISTEN_ADDR]`): a bare hyper 1 server (HTTP/1.1, tokio
//! multi-thread runtime, the same crates and settings clicktrail serves with) that answers
//! every request with a fixed `302`, a `Location` and a `Set-Cookie`, and does nothing else:
//! no parsing, no state, no disk. A ratio near 1 to it means the tracking work is close to
//! free next to the HTTP work.
//!
//! **Durable mode** (`baseline [LISTEN_ADDR] --durable DATA_DIR [--record-bytes N]`): the
//! *durable floor*. Every request, before its fixed `302` is sent, appends one record the
//! size of a click record to a log in `DATA_DIR` and waits for an fdatasync that covers it,
//! exactly as clicktrail's `sync = "always"` requires (no answer before the record is
//! durable), with group commit. It is the cheapest honest server that keeps that promise,
//! so the gap between the bare baseline and the floor is what durability itself costs on
//! this machine (the syncs' CPU in the kernel, the wake-ups, the waiting on the disk), and
//! the gap between the floor and clicktrail is what clicktrail's own work costs. A target
//! ratio to the bare baseline that the floor cannot reach, clicktrail cannot reach either.
//!
//! The floor does what clicktrail does for durability and nothing more, with the same
//! pieces: the project's `wal` crate (memory-mapped, preallocated segments of the same
//! default size, checksummed records, `fdatasync` of the written range), `Wal::begin_sync`
//! to hand the unsynced range to a syncer thread so appends go on during a sync, that
//! thread's gathering of what arrives while it gives the CPU away (into one sync), and one
//! message per sync back to an answering task on the runtime that completes the requests'
//! oneshots (see `engine/src/shard/syncer.rs`), and the standing timer clicktrail's server
//! runs so that its parked worker is not woken by every new header timer
//! (`server::timers`). In place of
//! clicktrail's shard actor and mailbox it has a mutex around the log: the request's task
//! appends itself, which is the cheapest way there is to get a record into the log.
//!
//! Both modes use the system allocator, where clicktrail uses mimalloc: the comparison, if
//! anything, flatters clicktrail a little.
//!
//! The floor's log only grows (no snapshots, no segment deletion): it is meant for runs
//! bounded in time, on a scratch directory. `GET /floor/syncs` answers the number of syncs
//! so far (as clicktrail's `clicktrail_wal_syncs` metric does), so the benchmark can report
//! requests per sync; it writes no record.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Where the baseline listens when no address is given: next to clicktrail's default 8080.
const DEFAULT_LISTEN: &str = "127.0.0.1:8090";

/// The same header-read timeout clicktrail uses against slowloris (SPEC 7), so both servers
/// arm the same timer per connection.
const HEADER_READ_TIMEOUT_SECS: u64 = 10;

/// A fixed answer the size and shape of a tracked click's: a landing URL carrying a click
/// ID, and a click cookie of the same length as a minted one.
const LOCATION: &str = "https://shop.example/?ref=AAAAAAAAAAAAAAAAAAAAAAAAAA&a=1&s=";
const SET_COOKIE: &str =
    "ct_1=AAAAAAAAAAAAAAAAAAAAAAAAAA; Max-Age=2592000; Path=/; HttpOnly; SameSite=Lax";

/// Payload bytes of the floor's record by default: the payload of the click record
/// clicktrail writes for the benchmark's click (`/click.track?CID=1&AFID=1&ADID=1&SID=bench`
/// from a visitor without a cookie), as `clicktrail wal dump` shows its `length` (53; 88
/// bytes in the log with the record's 32-byte header and padding to 8, which the `wal`
/// crate adds here too). For scale: an impression's payload is 30 bytes, an s2s
/// conversion's about 190. The size hardly matters: a sync writes whole 4 KiB pages.
const CLICK_RECORD_PAYLOAD_BYTES: usize = 53;

/// Largest `--record-bytes` accepted: the log's default record limit is 1 MiB, and a
/// record much larger than a click's measures something else than this floor is for.
const MAX_RECORD_PAYLOAD_BYTES: usize = 64 << 10;

/// The kind byte of the floor's records: the log is never read back, any value does.
const FLOOR_RECORD_KIND: u8 = 1;

/// Yields of the CPU at most before one sync, as clicktrail's syncer does (and for the same
/// reason: the request that woke the syncer came from a runtime worker still handling the
/// requests that arrived with it; giving the CPU back first lets one sync cover them all).
const GATHER_YIELDS: usize = 4;

/// The path that answers the sync count instead of a durable redirect.
const SYNCS_PATH: &str = "/floor/syncs";

fn redirect() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::LOCATION,
        hyper::header::HeaderValue::from_static(LOCATION),
    );
    headers.insert(
        hyper::header::SET_COOKIE,
        hyper::header::HeaderValue::from_static(SET_COOKIE),
    );
    response
}

async fn answer(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(redirect())
}

/// The durable floor's answer: the redirect once a sync covers this request's record; a
/// `503` when the record could not be appended or its sync failed (the log is then
/// poisoned and every later request fails too, as clicktrail's shard would).
async fn answer_durable(
    request: Request<Incoming>,
    floor: &'static Floor,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() == SYNCS_PATH {
        let syncs = floor.lock().wal.stats().syncs;
        return Ok(Response::new(Full::new(Bytes::from(format!("{syncs}\n")))));
    }
    let durable = match floor.append() {
        Some(reply) => reply.await.unwrap_or(false),
        None => false,
    };
    if durable {
        return Ok(redirect());
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    Ok(response)
}

/// Where a request learns whether its record was made durable.
type Reply = oneshot::Sender<bool>;

/// Requests waiting for one sync, and whether it made their records durable.
type Done = (Vec<Reply>, bool);

/// What `Wal::begin_sync` handed out.
type SyncTaken = Result<Option<wal::PendingSync>, wal::Error>;

/// The durable floor's log and the requests waiting on it. Lives as long as the process.
struct Floor {
    log: Mutex<Log>,
    /// Wakes the syncer when a request waits and the syncer is idle.
    work: Condvar,
    /// The payload every request appends (its content does not matter: the log checksums
    /// and copies it whatever it holds).
    record: Box<[u8]>,
}

struct Log {
    wal: wal::Wal,
    /// Requests whose records are appended and not yet handed to a sync, in log order.
    waiters: Vec<Reply>,
    /// An emptied list handed back by the answering task, to become the next `waiters`,
    /// so the lists are not allocated again on every sync.
    spare: Vec<Reply>,
    /// The syncer waits on `work` and must be signalled.
    syncer_idle: bool,
}

impl Floor {
    fn lock(&self) -> MutexGuard<'_, Log> {
        // Nothing panics while holding the lock; if something did, the log is still whole.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends this request's record; the receiver learns whether a sync made it durable.
    /// `None` when the append failed (poisoned log, disk full).
    fn append(&self) -> Option<oneshot::Receiver<bool>> {
        let (reply, durable) = oneshot::channel();
        let wake = {
            let mut log = self.lock();
            log.wal.append(FLOOR_RECORD_KIND, &self.record).ok()?;
            log.waiters.push(reply);
            std::mem::replace(&mut log.syncer_idle, false)
        };
        if wake {
            self.work.notify_one();
        }
        Some(durable)
    }

    /// Hands what was appended since the last call to a sync (`Err` when the log is
    /// poisoned, `None` when nothing needs syncing), with the requests it covers.
    fn take(log: &mut Log) -> (SyncTaken, Vec<Reply>) {
        let spare = std::mem::take(&mut log.spare);
        let waiters = std::mem::replace(&mut log.waiters, spare);
        (log.wal.begin_sync(), waiters)
    }

    /// The syncer thread: waits until a request waits, gathers what arrives while it gives
    /// the CPU away, runs one sync for all of it, and sends the answers in one message.
    fn run_syncer(&self, done: &mpsc::UnboundedSender<Done>) {
        loop {
            let mut log = self.lock();
            while log.waiters.is_empty() {
                log.syncer_idle = true;
                log = self.work.wait(log).unwrap_or_else(PoisonError::into_inner);
            }
            // Gathers: gives the CPU away while that brings more requests. One sync at the
            // end covers everything appended until then, under the same lock as its waiters.
            for _ in 0..GATHER_YIELDS {
                let before = log.waiters.len();
                drop(log);
                std::thread::yield_now();
                log = self.lock();
                if log.waiters.len() == before {
                    break;
                }
            }
            let (sync, batch) = Floor::take(&mut log);
            drop(log);
            let durable = match sync {
                Ok(None) => true,
                Ok(Some(pending)) => match pending.run() {
                    Ok(_) => true,
                    Err(e) => {
                        eprintln!("floor: sync failed: {e}");
                        false
                    }
                },
                Err(e) => {
                    eprintln!("floor: {e}");
                    false
                }
            };
            // Fails only when the runtime is gone (the process is ending): nobody waits.
            if done.send((batch, durable)).is_err() {
                return;
            }
        }
    }
}

/// What the command line asks for.
struct Args {
    listen: SocketAddr,
    /// Durable mode's data directory; bare mode when `None`.
    durable: Option<PathBuf>,
    record_bytes: usize,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut listen = None;
    let mut durable = None;
    let mut record_bytes = CLICK_RECORD_PAYLOAD_BYTES;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--durable" => {
                let dir = args.next().ok_or("--durable needs a data directory")?;
                durable = Some(PathBuf::from(dir));
            }
            "--record-bytes" => {
                let n = args.next().ok_or("--record-bytes needs a number")?;
                record_bytes = n
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_RECORD_PAYLOAD_BYTES).contains(n))
                    .ok_or(format!(
                        "--record-bytes {n:?}: want 1 to {MAX_RECORD_PAYLOAD_BYTES}"
                    ))?;
            }
            _ if listen.is_none() && !arg.starts_with('-') => {
                listen = Some(
                    arg.parse()
                        .map_err(|e| format!("bad listen address {arg:?}: {e}"))?,
                );
            }
            _ => {
                return Err(format!(
                    "unexpected argument {arg:?}; usage: baseline [LISTEN_ADDR] \
                     [--durable DATA_DIR [--record-bytes N]]"
                ))
            }
        }
    }
    let listen = match listen {
        Some(addr) => addr,
        None => DEFAULT_LISTEN
            .parse()
            .map_err(|e| format!("default address: {e}"))?,
    };
    Ok(Args {
        listen,
        durable,
        record_bytes,
    })
}

fn main() -> std::process::ExitCode {
    let result =
        parse_args(std::env::args().skip(1)).and_then(|args| run(args).map_err(|e| e.to_string()));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baseline: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> std::io::Result<()> {
    let floor: Option<&'static Floor> = match &args.durable {
        None => None,
        Some(dir) => {
            let options = wal::Options {
                sync: wal::SyncPolicy::Always,
                ..wal::Options::default()
            };
            let (wal, _recovered) = wal::Wal::open(dir, options)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", dir.display())))?;
            // Lives as long as the process: every connection borrows it without counting.
            Some(Box::leak(Box::new(Floor {
                log: Mutex::new(Log {
                    wal,
                    waiters: Vec::new(),
                    spare: Vec::new(),
                    syncer_idle: false,
                }),
                work: Condvar::new(),
                record: vec![0xA5; args.record_bytes].into_boxed_slice(),
            })))
        }
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args.listen, floor))
}

async fn serve(addr: SocketAddr, floor: Option<&'static Floor>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    // Only the floor parks while every request waits for a sync (see `server::timers`);
    // the bare baseline keeps "nothing else".
    let _anchor = floor.map(|_| server::timers::TimerAnchor::start());
    if let Some(floor) = floor {
        // The answering task: completes each sync's oneshots from inside the runtime, so
        // one wake-up of the runtime per sync serves every request the sync covered.
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        std::thread::Builder::new()
            .name("floor-sync".into())
            .spawn(move || floor.run_syncer(&done_tx))?;
        tokio::spawn(async move {
            while let Some((mut batch, durable)) = done_rx.recv().await {
                for reply in batch.drain(..) {
                    // The request may be gone (its connection closed): nothing to tell.
                    let _ = reply.send(durable);
                }
                floor.lock().spare = batch;
            }
        });
        eprintln!(
            "baseline (durable floor, {} byte records) listening on http://{}",
            floor.record.len(),
            listener.local_addr()?
        );
    } else {
        eprintln!("baseline listening on http://{}", listener.local_addr()?);
    }
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: keep serving the connections we have.
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        // Same as a tracker would: answer small requests without Nagle's delay.
        let _ = stream.set_nodelay(true);
        let http = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(HEADER_READ_TIMEOUT_SECS))
            .clone();
        let io = TokioIo::new(stream);
        match floor {
            None => tokio::spawn(async move {
                let _ = http.serve_connection(io, service_fn(answer)).await;
            }),
            Some(floor) => tokio::spawn(async move {
                let service = service_fn(move |request| answer_durable(request, floor));
                let _ = http.serve_connection(io, service).await;
            }),
        };
    }
}
