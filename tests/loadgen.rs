//! `clicktrail loadgen` (the real binary) against the real server and engine on
//! 127.0.0.1: its checks pass on a correct server across campaign rules, and its exit
//! status says so; traffic the server must refuse makes it fail.

mod support;

use support::*;

/// Requests per loadgen run: enough for every step of the mix to occur, small enough to
/// keep the test well under a second of load.
const REQUESTS: &str = "600";

/// Longest a loadgen run may take before the test gives up on it.
const LOADGEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

fn seed() -> String {
    let seed = std::env::var("SEED").unwrap_or_else(|_| rand::random::<u32>().to_string());
    eprintln!("SEED={seed}");
    seed
}

/// Runs loadgen against `server` for (campaign, affiliate) and checks its exit status and
/// that its report contains each of `expected_lines`.
async fn check(
    server: &TestServer,
    seed: &str,
    campaign: u32,
    affiliate: u32,
    extra: &[&str],
    succeeds: bool,
    expected_lines: &[&str],
) {
    let target = format!("http://{}", server.addr);
    let (campaign, affiliate) = (campaign.to_string(), affiliate.to_string());
    let mut args = vec![
        "loadgen",
        "--target",
        &target,
        "--admin-token",
        ADMIN_TOKEN,
        "--campaign",
        &campaign,
        "--affiliate",
        &affiliate,
        "--requests",
        REQUESTS,
        "--concurrency",
        "8",
        "--seed",
        seed,
    ];
    args.extend_from_slice(extra);
    let output = tokio::time::timeout(
        LOADGEN_TIMEOUT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_clicktrail"))
            .args(&args)
            .env("RUST_BACKTRACE", "0")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("loadgen finishes")
    .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("loadgen {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(output.status.success(), succeeds, "{context}");
    for line in expected_lines {
        assert!(
            stdout.contains(line),
            "no {line:?} in the report\n{context}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_checks_pass_on_a_correct_server_and_fail_on_refused_traffic() {
    let seed = seed();
    let server = TestServer::start().await;
    let passed = "all checks passed";
    // Every method attributed, duplicates refused, counters equal.
    check(&server, &seed, C_PLAIN, AFF, &[], true, &[passed]).await;
    // Repeats count on a campaign with multiple conversions; loadgen expects them to.
    check(&server, &seed, C_MULTI, AFF, &[], true, &[passed]).await;
    // AFID posts refused (403) on a campaign without them, as loadgen expects.
    check(&server, &seed, C_NO_AFID, AFF, &[], true, &[passed]).await;
    // X-Forwarded-For from an untrusted peer must be ignored: the clicks record 127.0.0.1,
    // not the addresses loadgen forwarded, and loadgen says so.
    check(
        &server,
        &seed,
        C_PLAIN,
        AFF,
        &["--forwarded-for"],
        false,
        &["FAIL", "WrongIp"],
    )
    .await;
    // A blocked affiliate's clicks are not tracked: loadgen must say so and fail.
    check(&server, &seed, C_PLAIN, AFF_BLOCKED, &[], false, &["FAIL"]).await;
    server.stop().await;
}

/// Behind a trusted proxy every visitor has its own address (and a share of them one
/// shared address): IP backup still finds each visitor's own click.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_checks_pass_with_forwarded_addresses_and_shared_ips() {
    let seed = seed();
    let mut config = config();
    config.server.trusted_proxies = vec!["127.0.0.1/32".parse().expect("a CIDR")];
    let server = TestServer::start_with(config).await;
    let extra = [
        "--forwarded-for",
        "--shared-ip-share",
        "0.5",
        "--cookie-loss-share",
        "0.6",
    ];
    check(
        &server,
        &seed,
        C_PLAIN,
        AFF,
        &extra,
        true,
        &["all checks passed"],
    )
    .await;
    server.stop().await;
}
