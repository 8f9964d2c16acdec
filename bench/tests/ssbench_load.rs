//! `ssbench load` against a tiny server of PROTOCOL.md made here (one thread per
//! connection), which can also answer wrongly, close early or stall: the load
//! generator must count every answer, check it, and count each fault by kind.
//! No assertion depends on timing; every wait is bounded by the generator's own
//! `--timeout` and window.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ss_bench::ssbench::load::{self, LoadArgs, Mode};
use ss_proto::{encode, matrix, Parsed, ServerDecoder, ServerFrame, MAX_FRAME_LEN};

/// How the tiny server misbehaves.
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    /// Flip one element of every n-th answer (counting from 1) on each connection.
    wrong_every: Option<u64>,
    /// Never answer requests (HelloAcks still go out).
    stall: bool,
    /// Close the connection after this many answers.
    close_after: Option<u64>,
    /// Answer a Hello with an error Response (and close).
    refuse_hello: bool,
    /// Hold the first answer on each connection back this long.
    first_answer_after: Option<Duration>,
}

/// Starts the server; it stops accepting when the returned flag is set (its
/// threads end with their connections).
fn tiny_server(faults: Faults) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop2.load(Ordering::Relaxed) {
                break;
            }
            if let Ok(conn) = conn {
                std::thread::spawn(move || serve(conn, faults));
            }
        }
    });
    (addr, stop)
}

fn serve(mut conn: TcpStream, faults: Faults) {
    let _ = conn.set_nodelay(true);
    let mut decoder = ServerDecoder::new();
    let mut inbox: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut reply = vec![0u8; MAX_FRAME_LEN];
    let mut product = vec![0u32; 64 * 64];
    let mut answered = 0u64;
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        inbox.extend_from_slice(&buf[..n]);
        let mut out = Vec::new();
        loop {
            let (len, consumed) = match decoder.decode(&inbox) {
                Ok(Parsed::Incomplete { .. }) => break,
                Err(bad) => {
                    let len =
                        encode::encode_response_error(bad.request_id(), bad.status(), &mut reply)
                            .unwrap();
                    let _ = conn.write_all(&reply[..len]);
                    return;
                }
                Ok(Parsed::Complete { frame, consumed }) => match frame {
                    ServerFrame::Hello(_) if faults.refuse_hello => {
                        let len = encode::encode_response_error(
                            0,
                            ss_proto::ErrorStatus::Overloaded,
                            &mut reply,
                        )
                        .unwrap();
                        let _ = conn.write_all(&reply[..len]);
                        return;
                    }
                    ServerFrame::Hello(h) => (
                        encode::encode_hello_ack(h.priority.min(7), &mut reply).unwrap(),
                        consumed,
                    ),
                    ServerFrame::Request(req) => {
                        if faults.stall {
                            inbox.drain(..consumed);
                            continue;
                        }
                        if answered == 0 {
                            if let Some(d) = faults.first_answer_after {
                                std::thread::sleep(d);
                            }
                        }
                        let dim = req.dim();
                        let c = &mut product[..dim.elements()];
                        matrix::square_into(dim, &req.matrix, c).unwrap();
                        answered += 1;
                        if faults.wrong_every.is_some_and(|k| answered % k == 0) {
                            c[0] = c[0].wrapping_add(1);
                        }
                        (
                            encode::encode_response_ok(req.id, dim, &*c, &mut reply).unwrap(),
                            consumed,
                        )
                    }
                },
            };
            out.extend_from_slice(&reply[..len]);
            inbox.drain(..consumed);
            if faults.close_after.is_some_and(|k| answered >= k) {
                let _ = conn.write_all(&out);
                return;
            }
        }
        if conn.write_all(&out).is_err() {
            return;
        }
    }
}

fn args(addr: SocketAddr) -> LoadArgs {
    LoadArgs {
        connections: 8,
        interval: Duration::from_millis(20),
        duration: Duration::from_millis(300),
        timeout: Duration::from_secs(5),
        ..LoadArgs::paper(addr, 8)
    }
}

#[test]
fn closed_loop_verifies_every_answer_per_priority() {
    let (addr, stop) = tiny_server(Faults::default());
    let report = load::run(&LoadArgs {
        levels: Some(4),
        ..args(addr)
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let c = &report.counts;
    assert!(c.clean(), "{c:?}");
    assert_eq!(c.connected, 8);
    // 8 connections × 15 intervals of 20 ms in 300 ms, all sent and answered.
    assert_eq!(c.sent, 8 * 15, "{c:?}");
    assert_eq!(c.verified, c.sent);
    assert_eq!(c.unsent, 0);
    assert_eq!(report.latency.count, c.verified);
    // Connection i asked for i % 4; the server granted what was asked.
    let prios: Vec<Option<u8>> = report.groups.iter().map(|g| g.priority).collect();
    assert_eq!(prios, vec![Some(0), Some(1), Some(2), Some(3)]);
    assert!(report.groups.iter().all(|g| g.connections == 2));
    let per_group: u64 = report.groups.iter().map(|g| g.latency.count).sum();
    assert_eq!(per_group, c.verified);
    assert!(report.latency.p50_us > 0.0 && report.latency.max_us >= report.latency.p99_us);
    // The HelloAcks showed the server serves every connection: no warm-up.
    assert_eq!(report.warmup_ms, None);
}

#[test]
fn without_hello_a_warm_up_answer_per_connection_precedes_the_window() {
    let (addr, stop) = tiny_server(Faults::default());
    let report = load::run(&args(addr)).unwrap();
    stop.store(true, Ordering::Relaxed);
    let c = &report.counts;
    assert!(c.clean(), "{c:?}");
    assert_eq!(c.connected, 8);
    // One warm-up request per connection, then 15 intervals of 20 ms each.
    assert_eq!(c.sent, 8 + 8 * 15, "{c:?}");
    assert_eq!(c.verified, c.sent);
    // The warm-up answers are verified but neither timed nor in the window.
    assert_eq!(report.latency.count, 8 * 15);
    assert!(c.in_window <= 8 * 15, "{c:?}");
    assert!(
        report.warmup_ms.is_some_and(|ms| ms > 0.0),
        "{:?}",
        report.warmup_ms
    );
}

#[test]
fn open_loop_pipelines_and_verifies() {
    let (addr, stop) = tiny_server(Faults::default());
    let report = load::run(&LoadArgs {
        mode: Mode::Open,
        rate: 2_000.0,
        connections: 4,
        ..args(addr)
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let c = &report.counts;
    assert!(c.clean(), "{c:?}");
    assert!(c.sent > 0);
    assert_eq!(c.verified, c.sent, "{c:?}");
    assert_eq!(report.groups.len(), 1);
    assert_eq!(report.groups[0].priority, None);
    assert_eq!(report.rate, Some(2_000.0));
}

#[test]
fn wrong_answers_are_caught_and_end_their_connection() {
    let (addr, stop) = tiny_server(Faults {
        wrong_every: Some(3),
        ..Faults::default()
    });
    let report = load::run(&args(addr)).unwrap();
    stop.store(true, Ordering::Relaxed);
    let c = &report.counts;
    // Each connection's third answer is wrong: 8 wrong answers, 16 right ones.
    assert_eq!(c.wrong_answers, 8, "{c:?}");
    assert_eq!(c.verified, 16, "{c:?}");
    assert!(!c.clean());
    assert!(c.unsent > 0);
}

/// A load against a server that never answers a request, with a 200 ms
/// timeout, with Hello (`levels`) or without.
fn against_a_stalled_server(levels: Option<u8>) -> load::LoadReport {
    let (addr, stop) = tiny_server(Faults {
        stall: true,
        ..Faults::default()
    });
    let report = load::run(&LoadArgs {
        timeout: Duration::from_millis(200),
        levels,
        ..args(addr)
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    report
}

#[test]
fn a_stalled_server_costs_timeouts_not_a_hang() {
    let report = against_a_stalled_server(Some(2));
    let c = &report.counts;
    assert_eq!(c.connected, 8, "HelloAcks still came: {c:?}");
    assert_eq!(c.verified, 0);
    // One request per connection went out and was never answered.
    assert_eq!(c.timeouts, 8, "{c:?}");
    assert_eq!(c.sent, 8);
}

#[test]
fn a_warm_up_left_unanswered_ends_its_connections_once() {
    // No Hello: the warm-up request is the first, and it is never answered.
    let report = against_a_stalled_server(None);
    let c = &report.counts;
    assert_eq!(c.connected, 8, "{c:?}");
    assert_eq!(c.sent, 8, "only the warm-up requests: {c:?}");
    assert_eq!(c.verified, 0);
    // Each counted once, in the warm-up; the window starts without them.
    assert_eq!(c.timeouts, 8, "{c:?}");
    assert_eq!(report.latency.count, 0);
}

#[test]
fn an_early_close_is_counted() {
    let (addr, stop) = tiny_server(Faults {
        close_after: Some(2),
        ..Faults::default()
    });
    let report = load::run(&args(addr)).unwrap();
    stop.store(true, Ordering::Relaxed);
    let c = &report.counts;
    assert_eq!(c.verified, 16, "{c:?}");
    assert_eq!(c.closed, 8, "{c:?}");
}

#[test]
fn nobody_listening_is_a_connect_error() {
    // Bind and drop: the port is very likely free and refuses connections.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let report = load::run(&LoadArgs {
        connections: 2,
        ..args(addr)
    })
    .unwrap();
    assert_eq!(report.counts.connect_errors, 2);
    assert_eq!(report.counts.verified, 0);
}

#[test]
fn hold_ramps_until_the_cap() {
    let (addr, stop) = tiny_server(Faults::default());
    let hold = load::hold(addr, 40, 16, Duration::from_secs(5), Duration::ZERO, || {
        true
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    assert_eq!(hold.held, 40, "{hold:?}");
    assert_eq!(hold.failed_at, None);
    // Rounds at 16, 32 and 40 connections: one request each per round.
    assert_eq!(hold.verified, 16 + 32 + 40);
}

#[test]
fn hold_stops_at_the_first_failure() {
    let (addr, stop) = tiny_server(Faults {
        close_after: Some(2),
        ..Faults::default()
    });
    let hold = load::hold(addr, 64, 8, Duration::from_secs(5), Duration::ZERO, || true).unwrap();
    stop.store(true, Ordering::Relaxed);
    // The first 8 connections answer twice, then close: the second round (16)
    // fails if their close is seen within it, the third (24) in any case.
    assert!(matches!(hold.held, 8 | 16), "{hold:?}");
    assert_eq!(hold.failed_at, Some(hold.held + 8), "{hold:?}");
    assert_eq!(hold.wrong_answers, 0);
}

#[test]
fn the_binary_prints_json() {
    let (addr, stop) = tiny_server(Faults::default());
    let out = Command::new(env!("CARGO_BIN_EXE_ssbench"))
        .args(["load", "--addr", &addr.to_string(), "--connections", "3"])
        .args([
            "--interval",
            "10ms",
            "--duration",
            "200ms",
            "--levels",
            "3",
            "--json",
        ])
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["counts"]["connected"], 3);
    assert_eq!(v["counts"]["sent"], v["counts"]["verified"]);
    assert_eq!(v["groups"].as_array().unwrap().len(), 3);
    assert_eq!(v["mode"], "closed");
    assert!(v["latency"]["p999_us"].as_f64().unwrap() > 0.0);
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_ssbench"))
        .args(["load", "--addr", "127.0.0.1:1", "--dim", "65"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dim 65"));
    // A rate no client sends: refused at once (walking its schedule, a gap of
    // 0 ns never moved on: the run hung).
    let out = Command::new(env!("CARGO_BIN_EXE_ssbench"))
        .args([
            "load",
            "--addr",
            "127.0.0.1:1",
            "--mode",
            "open",
            "--rate",
            "1e12",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--rate 1000000000000: at most"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_refused_hello_is_counted_as_refused() {
    let (addr, stop) = tiny_server(Faults {
        refuse_hello: true,
        ..Faults::default()
    });
    let report = load::run(&LoadArgs {
        levels: Some(2),
        ..args(addr)
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let c = &report.counts;
    assert_eq!(c.refused, 8, "{c:?}");
    assert_eq!(
        (c.protocol_errors, c.connected, c.verified),
        (0, 0, 0),
        "{c:?}"
    );
}

#[test]
fn a_stall_is_charged_to_every_request_it_delayed() {
    // One connection, a request due every 10 ms for 300 ms (30), and a server
    // that holds its first answer back 200 ms. The closed loop sends request k
    // (due at 10k ms) only once that answer is in, so it waits at least
    // 200 - 10k ms past its intended time: 20 of the 30 wait 10 ms or more,
    // the median at least 60 ms. Timed from the write instead, every one would
    // take about as long as the server takes to square a matrix.
    let (addr, stop) = tiny_server(Faults {
        first_answer_after: Some(Duration::from_millis(200)),
        ..Faults::default()
    });
    let report = load::run(&LoadArgs {
        connections: 1,
        interval: Duration::from_millis(10),
        levels: Some(1),
        ..args(addr)
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let c = &report.counts;
    assert!(c.clean(), "{c:?}");
    assert_eq!((c.sent, c.verified, c.unsent), (30, 30, 0), "{c:?}");
    assert_eq!(report.latency.count, 30);
    assert!(report.latency.max_us >= 200_000.0, "{:?}", report.latency);
    assert!(report.latency.p50_us >= 50_000.0, "{:?}", report.latency);
}

#[test]
fn levels_zero_sends_no_hello_and_so_warms_up() {
    let (addr, stop) = tiny_server(Faults::default());
    let report = load::run(&LoadArgs {
        levels: Some(0),
        ..args(addr)
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let c = &report.counts;
    assert!(c.clean(), "{c:?}");
    // As without --levels: the warm-up's 8, verified, then 15 per connection.
    assert_eq!(c.sent, 8 + 8 * 15, "{c:?}");
    assert_eq!(report.latency.count, 8 * 15);
    assert!(report.warmup_ms.is_some(), "{report:?}");
    assert_eq!(report.groups.len(), 1);
    assert_eq!(report.groups[0].priority, None);
}

#[test]
fn send_lag_has_a_sample_for_every_request() {
    // Back to back and open loop: the requests that go out when an answer or a
    // writable socket wakes the client, not a timer, are timed too. With Hello,
    // so that every request sent is one of the window's.
    for (mode, interval) in [
        (Mode::Closed, Duration::ZERO),
        (Mode::Closed, Duration::from_millis(20)),
        (Mode::Open, Duration::ZERO),
    ] {
        let (addr, stop) = tiny_server(Faults::default());
        let report = load::run(&LoadArgs {
            mode,
            interval,
            rate: 2_000.0,
            levels: Some(2),
            ..args(addr)
        })
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        let c = &report.counts;
        assert!(c.clean(), "{mode:?} {interval:?}: {c:?}");
        assert!(c.sent > 0);
        assert_eq!(
            report.send_lag.count, c.sent,
            "{mode:?} {interval:?}: {c:?}"
        );
    }
}

/// What the scripted server writes, given the requests it has seen.
type Script = fn(&[Seen]) -> Vec<u8>;

/// A request as the scripted server saw it.
struct Seen {
    id: u64,
    dim: ss_proto::Dim,
    matrix: Vec<u32>,
}

/// An answer to `r`: C = M × M, with `tweak` applied to C.
fn answer(id: u64, r: &Seen, tweak: impl FnOnce(&mut [u32])) -> Vec<u8> {
    let mut c = vec![0u32; r.dim.elements()];
    matrix::square_into(r.dim, r.matrix.as_slice(), &mut c).unwrap();
    tweak(&mut c);
    let mut out = vec![0u8; MAX_FRAME_LEN];
    let len = encode::encode_response_ok(id, r.dim, &*c, &mut out).unwrap();
    out.truncate(len);
    out
}

/// A server for one connection with Hello: it answers the HelloAck, waits
/// until it has `need` requests, writes `script`'s bytes, and then reads on
/// without answering (or shuts its side, if `close`: a FIN). Runs an open-loop load of one
/// connection against it and returns the counts.
fn scripted(need: usize, close: bool, script: Script) -> load::Counts {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut decoder = ServerDecoder::new();
        let mut inbox = Vec::new();
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut done = false;
        loop {
            let n = match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            inbox.extend_from_slice(&buf[..n]);
            while let Ok(Parsed::Complete { frame, consumed }) = decoder.decode(&inbox) {
                match frame {
                    ServerFrame::Hello(h) => {
                        let mut ack = [0u8; 8];
                        encode::encode_hello_ack(h.priority, &mut ack).unwrap();
                        conn.write_all(&ack).unwrap();
                    }
                    ServerFrame::Request(r) => seen.push(Seen {
                        id: r.id,
                        dim: r.dim(),
                        matrix: (0..r.dim().elements()).map(|k| r.matrix.get(k)).collect(),
                    }),
                }
                inbox.drain(..consumed);
            }
            if !done && seen.len() >= need {
                done = true;
                let _ = conn.write_all(&script(&seen));
                if close {
                    // A FIN, not a reset: closing with the client's requests
                    // unread would send an RST, which the client may see as
                    // an I/O error before the end of file. Read on until the
                    // client, having seen the end, lets go.
                    let _ = conn.shutdown(std::net::Shutdown::Write);
                }
            }
        }
    });
    let report = load::run(&LoadArgs {
        mode: Mode::Open,
        rate: 2_000.0,
        connections: 1,
        levels: Some(1),
        timeout: Duration::from_secs(1),
        ..args(addr)
    })
    .unwrap();
    server.join().unwrap();
    let c = report.counts;
    // Every request sent is accounted for, whatever ended the connection.
    assert_eq!(
        c.sent,
        c.verified + c.wrong_answers + c.refused + c.timeouts + c.lost,
        "{c:?}"
    );
    c
}

#[test]
fn answers_out_of_order_are_wrong() {
    let c = scripted(2, false, |s| {
        let mut out = answer(s[1].id, &s[1], |_| {});
        out.extend(answer(s[0].id, &s[0], |_| {}));
        out
    });
    assert_eq!((c.verified, c.wrong_answers), (0, 1), "{c:?}");
}

#[test]
fn a_duplicated_answer_is_caught() {
    let c = scripted(2, false, |s| {
        let mut out = answer(s[0].id, &s[0], |_| {});
        out.extend(answer(s[0].id, &s[0], |_| {}));
        out
    });
    assert_eq!(c.verified, 1, "{c:?}");
    // The copy answers the second request (wrong id) or nothing at all.
    assert_eq!(c.wrong_answers + c.protocol_errors, 1, "{c:?}");
}

#[test]
fn another_requests_product_under_the_right_id_is_wrong() {
    let c = scripted(2, false, |s| answer(s[0].id, &s[1], |_| {}));
    assert_eq!((c.verified, c.wrong_answers), (0, 1), "{c:?}");
}

#[test]
fn the_right_product_under_another_id_is_wrong() {
    let c = scripted(2, false, |s| answer(s[1].id, &s[0], |_| {}));
    assert_eq!((c.verified, c.wrong_answers), (0, 1), "{c:?}");
}

#[test]
fn one_wrong_element_is_wrong() {
    let c = scripted(1, false, |s| {
        answer(s[0].id, &s[0], |m| {
            let last = m.len() - 1;
            m[last] ^= 1 << 31;
        })
    });
    assert_eq!((c.verified, c.wrong_answers), (0, 1), "{c:?}");
}

#[test]
fn a_refused_request_is_counted_as_refused() {
    let c = scripted(1, false, |s| {
        let mut out = vec![0u8; 16];
        encode::encode_response_error(s[0].id, ss_proto::ErrorStatus::Overloaded, &mut out)
            .unwrap();
        out
    });
    assert_eq!(
        (c.verified, c.refused, c.protocol_errors),
        (0, 1, 0),
        "{c:?}"
    );
}

#[test]
fn malformed_frames_are_protocol_errors() {
    // A bad magic; a declared dimension of 60 000 (14 GB of payload, never
    // waited for); a HelloAck where a Response belongs.
    let bad: [Script; 3] = [
        |_| b"XXXX0123456789ab".to_vec(),
        |s| {
            let mut h = b"SSRS".to_vec();
            h.extend(s[0].id.to_le_bytes());
            h.extend(60_000u16.to_le_bytes());
            h.extend([0, 0]);
            h
        },
        |_| b"SSHA\0\0\0\0".to_vec(),
    ];
    for script in bad {
        let c = scripted(1, false, script);
        assert_eq!((c.verified, c.protocol_errors), (0, 1), "{c:?}");
        assert_eq!(c.errors(), 1, "{c:?}");
    }
}

#[test]
fn a_close_in_the_middle_of_an_answer_is_counted() {
    let c = scripted(1, true, |s| {
        let mut out = answer(s[0].id, &s[0], |_| {});
        out.truncate(out.len() / 2);
        out
    });
    assert_eq!((c.verified, c.closed, c.io_errors), (0, 1, 0), "{c:?}");
    // The request whose answer was cut, and any sent after it.
    assert!(c.lost >= 1, "{c:?}");
}

#[test]
fn a_server_that_never_answers_times_out_each_request_once() {
    // The connection's oldest request waits past the 1 s timeout: every
    // request it had out is a timeout, and none of them is also lost.
    let c = scripted(1, false, |_| Vec::new());
    assert_eq!((c.verified, c.lost), (0, 0), "{c:?}");
    assert!(c.sent > 0, "{c:?}");
    assert_eq!(c.timeouts, c.sent, "{c:?}");
}
