//! Property tests of the coordinator's untrusted inputs: the registration
//! messages, a process page's every word (read through the real reader, also
//! while its owner rewrites it), the top-level budget over arbitrary scans,
//! and the stall watch over arbitrary clocks. Nothing may panic, and what the
//! coordinator derives keeps the bounds `docs/coordinator.md` states.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use ss_abi::page::{PAGE_VERSION, PROCESS_PAGE_MAGIC, PROCESS_PAGE_MIN_LEN};
use ss_abi::{Levels, Priority};
use ss_coord::page::{PageError, ProcessPageReader, YieldCount, MAX_YIELD_STEP};
use ss_coord::policy::{clamp, scan_bits, Budget, Holder};
use ss_coord::stall::{Reading, Stall, SAMPLES_PER_WINDOW};
use ss_coord::sys;
use ss_coord::wire::{
    Hello, Refusal, Reply, Welcome, HELLO_MAGIC, MSG_LEN, PROTOCOL_VERSION, REPLY_MAGIC,
};
use ss_coord::Policy;

// ---------------------------------------------------------------- wire

const REFUSALS: [Refusal; 6] = [
    Refusal::BadHello,
    Refusal::BadPage,
    Refusal::PidMismatch,
    Refusal::Full,
    Refusal::Internal,
    Refusal::UidLimit,
];

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        any::<(u32, u8, u8)>().prop_map(|r| Reply { result: Ok(r) }),
        prop::sample::select(REFUSALS.to_vec()).prop_map(|r| Reply { result: Err(r) }),
    ]
}

/// Valid messages of every kind, as bytes.
fn valid_message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Welcome.encode().to_vec()),
        any::<u32>().prop_map(|pid| Hello { pid }.encode().to_vec()),
        reply().prop_map(|r| r.encode().to_vec()),
        Just(vec![b'!']),
    ]
}

/// Anything, a real magic and anything, or a valid message with bytes
/// changed, cut short or extended.
fn wire_garbage() -> impl Strategy<Value = Vec<u8>> {
    let magic = prop::sample::select(vec![*b"SSCW", *b"SSCH", *b"SSCR", *b"SSCX"]);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        (magic, prop::collection::vec(any::<u8>(), 0..20)).prop_map(|(m, rest)| {
            let mut v = m.to_vec();
            v.extend(rest);
            v
        }),
        (
            valid_message(),
            prop::collection::vec((any::<usize>(), any::<u8>()), 0..3),
            any::<usize>(),
            prop::collection::vec(any::<u8>(), 0..3),
        )
            .prop_map(|(mut m, flips, cut, tail)| {
                for (at, byte) in flips {
                    let len = m.len();
                    m[at % len] = byte;
                }
                if cut % 3 == 0 {
                    m.truncate(cut / 3 % (m.len() + 1));
                }
                if cut % 5 == 0 {
                    m.extend(tail);
                }
                m
            }),
    ]
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().unwrap())
}

/// The hello the table in `wire`'s docs describes, read from `b`.
fn reference_hello(b: &[u8]) -> Option<Hello> {
    (b.len() == MSG_LEN
        && le32(&b[0..4]) == HELLO_MAGIC
        && le32(&b[4..8]) == PROTOCOL_VERSION
        && le32(&b[12..16]) == 0)
        .then(|| Hello {
            pid: le32(&b[8..12]),
        })
}

/// The reply the table describes: magic, status, and for an acceptance the
/// id, ceiling and levels; every other byte zero (the reserved `u16`, and a
/// refusal's unused words).
fn reference_reply(b: &[u8]) -> Option<Reply> {
    if b.len() != MSG_LEN || le32(&b[0..4]) != REPLY_MAGIC || b[14..16] != [0, 0] {
        return None;
    }
    let result = match le32(&b[4..8]) {
        0 => Ok((le32(&b[8..12]), b[12], b[13])),
        s if b[8..14].iter().all(|x| *x == 0) => Err(*REFUSALS.iter().find(|r| **r as u32 == s)?),
        _ => return None,
    };
    Some(Reply { result })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every decoder takes any bytes without panicking and accepts exactly
    /// the messages the protocol table describes.
    #[test]
    fn wire_decoders_accept_exactly_the_protocol(bytes in wire_garbage()) {
        let hello = Hello::decode(&bytes);
        prop_assert_eq!(hello, reference_hello(&bytes));
        if let Some(h) = hello {
            prop_assert_eq!(&h.encode()[..], &bytes[..]);
        }
        let welcome = Welcome::decode(&bytes);
        prop_assert_eq!(welcome.is_some(), bytes[..] == Welcome.encode()[..]);
        let reply = Reply::decode(&bytes);
        prop_assert_eq!(reply, reference_reply(&bytes));
        if let Some(Reply { result: Err(r) }) = reply {
            prop_assert!(!r.to_string().is_empty());
        }
        // No two kinds of message are ever taken for one another.
        let kinds = [hello.is_some(), welcome.is_some(), reply.is_some()];
        prop_assert!(kinds.iter().filter(|k| **k).count() <= 1, "{:?}", kinds);
    }

    #[test]
    fn wire_messages_round_trip(pid in any::<u32>(), r in reply()) {
        prop_assert_eq!(Hello::decode(&Hello { pid }.encode()), Some(Hello { pid }));
        prop_assert_eq!(Reply::decode(&r.encode()), Some(r));
        prop_assert_eq!(Welcome::decode(&Welcome.encode()), Some(Welcome));
    }
}

// ---------------------------------------------------------------- page

/// A memfd of `len` bytes holding `bytes` (cut to `len`), sealed against
/// shrinking if `sealed`.
fn page_file(bytes: &[u8], len: usize, sealed: bool) -> (OwnedFd, File) {
    let fd = sys::memfd(c"prop-page", len).unwrap();
    let file = File::from(fd.try_clone().unwrap());
    file.write_all_at(&bytes[..bytes.len().min(len)], 0)
        .unwrap();
    if sealed {
        sys::add_seals(fd.as_fd(), libc::F_SEAL_SHRINK).unwrap();
    }
    (fd, file)
}

/// The page's first 40 bytes: magic, version, seq, ready, yields.
fn page_bytes(magic: u32, version: u32, seq: u64, ready: u64, yields: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(40);
    b.extend(magic.to_le_bytes());
    b.extend(version.to_le_bytes());
    b.extend(seq.to_le_bytes());
    b.extend(ready.to_le_bytes());
    b.extend(yields.to_le_bytes());
    b
}

fn levels_and_ceiling() -> impl Strategy<Value = (Levels, Priority)> {
    (1..=64u8).prop_flat_map(|n| {
        let levels = Levels::new(n).unwrap();
        (Just(levels), 0..n).prop_map(|(l, c)| (l, Priority::new(c).unwrap()))
    })
}

/// The invariants of what a scan takes from a page whose `ready` is `raw`
/// and whose header is ours (`ok`).
fn check_scan_bits(
    raw: u64,
    ok: bool,
    (bits, seen_ok): (u64, bool),
    levels: Levels,
    c: Priority,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(seen_ok, ok);
    // A bad header counts as nothing ready.
    if !ok {
        prop_assert_eq!(bits, 0);
        return Ok(());
    }
    // A subset of the levels, none more important than the ceiling...
    prop_assert_eq!(bits & !levels.mask(), 0, "{:#x} beyond {:?}", bits, levels);
    prop_assert_eq!(
        bits & c.more_important_mask(),
        0,
        "{:#x} above {:?}",
        bits,
        c
    );
    // ...and nothing hidden: what is at or below the ceiling stays, what is
    // above it is seen at the ceiling.
    let within = raw & levels.mask();
    prop_assert_eq!(
        bits & !c.bit(),
        within & !c.more_important_mask() & !c.bit()
    );
    prop_assert_eq!(
        bits & c.bit() != 0,
        within & (c.more_important_mask() | c.bit()) != 0
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any page content, any length, read through the real reader: refused
    /// with an error if too short or unsealed, else read word for word (a
    /// short file reads as zero beyond its end), and the scan's bits keep
    /// the ceiling and the levels.
    #[test]
    fn any_page_is_read_as_written_and_clamped(
        magic in prop_oneof![Just(PROCESS_PAGE_MAGIC), any::<u32>()],
        version in prop_oneof![Just(PAGE_VERSION), any::<u32>()],
        seq in any::<u64>(),
        ready in any::<u64>(),
        yields in any::<u64>(),
        rest in prop::collection::vec(any::<u8>(), 0..64),
        len in prop_oneof![4 => Just(4096usize), 2 => 0usize..64, 1 => 64usize..8192],
        sealed in prop::bool::weighted(0.9),
        (levels, c) in levels_and_ceiling(),
    ) {
        let mut bytes = page_bytes(magic, version, seq, ready, yields);
        bytes.extend(rest);
        let (fd, _file) = page_file(&bytes, len, sealed);
        let reader = match ProcessPageReader::open(&fd) {
            Ok(r) => r,
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                match e {
                    PageError::NotSealed => prop_assert!(!sealed),
                    PageError::TooSmall(n) => {
                        prop_assert!(sealed && n < PROCESS_PAGE_MIN_LEN as u64);
                        prop_assert_eq!(n, len as u64);
                    }
                    e => prop_assert!(false, "refused for another reason: {}", e),
                }
                return Ok(());
            }
        };
        prop_assert!(sealed && len >= PROCESS_PAGE_MIN_LEN);
        let mut seen = bytes.clone();
        seen.resize(40, 0);
        seen[len.min(40)..].fill(0);
        let snap = reader.snapshot();
        prop_assert_eq!(snap.magic, le32(&seen[0..4]));
        prop_assert_eq!(snap.version, le32(&seen[4..8]));
        prop_assert_eq!(snap.seq, u64::from_le_bytes(seen[8..16].try_into().unwrap()));
        prop_assert_eq!(snap.ready, u64::from_le_bytes(seen[16..24].try_into().unwrap()));
        prop_assert_eq!(snap.yields, u64::from_le_bytes(seen[24..32].try_into().unwrap()));
        let ok = magic == PROCESS_PAGE_MAGIC && version == PAGE_VERSION;
        check_scan_bits(snap.ready, ok, scan_bits(&snap, levels, c), levels, c)?;
    }

    /// The owner rewrites its page (whole words or torn ones, any values)
    /// while the coordinator reads it: every snapshot still yields bits
    /// within the levels and the ceiling.
    #[test]
    fn a_page_rewritten_during_the_reads_stays_clamped(
        writes in prop::collection::vec((any::<u8>(), any::<u64>(), any::<u64>()), 1..64),
        (levels, c) in levels_and_ceiling(),
    ) {
        let bytes = page_bytes(PROCESS_PAGE_MAGIC, PAGE_VERSION, 0, 0, 0);
        let (fd, file) = page_file(&bytes, 4096, true);
        let reader = ProcessPageReader::open(&fd).unwrap();
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    for &(at, a, b) in &writes {
                        // Any offset in the header, unaligned too: torn words.
                        let at = u64::from(at % 33);
                        file.write_all_at(&a.to_le_bytes(), at).unwrap();
                        file.write_all_at(&b.to_le_bytes(), 16).unwrap();
                    }
                }
            });
            let result: Result<(), TestCaseError> = (|| {
                for _ in 0..200 {
                    let snap = reader.snapshot();
                    let ok = snap.magic == PROCESS_PAGE_MAGIC && snap.version == PAGE_VERSION;
                    check_scan_bits(snap.ready, ok, scan_bits(&snap, levels, c), levels, c)?;
                }
                Ok(())
            })();
            done.store(true, Ordering::Relaxed);
            result
        })?;
    }

    /// The yield counter at any values, wrapping included: a step of at
    /// most 2^32 counts exactly, anything else is dropped and counting
    /// resumes from the new value (docs/coordinator.md, "Yields").
    #[test]
    fn yield_counts_take_only_sensible_steps(
        first in prop_oneof![any::<u64>(), (u64::MAX - 1000)..=u64::MAX],
        readings in prop::collection::vec(
            prop_oneof![
                3 => (0..=MAX_YIELD_STEP).prop_map(Ok),
                1 => Just(Ok(MAX_YIELD_STEP)),
                1 => any::<u64>().prop_map(Err),
                // Just too far, or a step back.
                1 => Just(Err(MAX_YIELD_STEP + 1)),
                1 => Just(Err(u64::MAX)),
            ],
            0..64,
        ),
    ) {
        let mut count = YieldCount::new(first);
        let (mut page, mut expect) = (first, 0u64);
        for r in readings {
            match r {
                // An honest counter moved on by `step` (wrapping).
                Ok(step) => {
                    page = page.wrapping_add(step);
                    expect = expect.wrapping_add(step);
                }
                // Garbage: counted only if it happens to be a sensible
                // step (a jump of `value` past the last, for the two
                // fixed ones).
                Err(value) => {
                    let value = if value == MAX_YIELD_STEP + 1 || value == u64::MAX {
                        page.wrapping_add(value)
                    } else {
                        value
                    };
                    let step = value.wrapping_sub(page);
                    if step <= MAX_YIELD_STEP {
                        expect = expect.wrapping_add(step);
                    }
                    page = value;
                }
            }
            count.note(page);
            prop_assert_eq!(count.total(), expect);
        }
    }
}

// ---------------------------------------------------------------- budget

fn budget_policy() -> impl Strategy<Value = Policy> {
    let hold = prop_oneof![
        1 => Just(None),
        1 => Just(Some(Duration::ZERO)),
        6 => (1..200u64).prop_map(|ms| Some(Duration::from_millis(ms))),
    ];
    let share = prop_oneof![4 => 0..=100u8, 1 => Just(0u8), 1 => Just(100u8)];
    (hold, share, 1..=64u8).prop_map(|(hold, hold_share, n)| Policy {
        levels: Levels::new(n).unwrap(),
        hold,
        hold_share,
        ..Policy::default()
    })
}

/// The bucket's burst if the policy has a budget at all (docs: "`hold-share
/// 100` or `hold-ms 0` turns the budget off").
fn cap(pol: &Policy) -> Option<Duration> {
    pol.hold.filter(|h| !h.is_zero() && pol.hold_share < 100)
}

/// Checks one `observe`: the ceiling, the levels, and that the budget only
/// ever moves the ceiling's bit one level down.
fn check_effective(
    clamped: u64,
    effective: u64,
    pol: &Policy,
    c: Priority,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(effective & !pol.levels.mask(), 0);
    prop_assert_eq!(effective & c.more_important_mask(), 0);
    if effective != clamped {
        let lower = pol
            .levels
            .priority(u64::from(c.level()) + 1)
            .map_or(0, |p| p.bit());
        prop_assert!(clamped & c.bit() != 0);
        prop_assert_eq!(effective, (clamped & !c.bit()) | lower);
        prop_assert!(cap(pol).is_some(), "demoted without a budget");
    }
    Ok(())
}

/// A tick: time moves on by `.0` µs, then every registration is scanned
/// with its page's bits (in `.1`, cycled) — as the coordinator's tick does.
type Tick = (u64, Vec<u64>);

fn ticks(max_step_us: u64) -> impl Strategy<Value = Vec<Tick>> {
    let bits = prop_oneof![
        any::<u64>(),
        Just(u64::MAX),
        Just(0u64),
        (0..64u32).prop_map(|b| 1u64 << b)
    ];
    prop::collection::vec((0..=max_step_us, prop::collection::vec(bits, 1..4)), 1..400)
}

/// Largest step between two ticks in the share test.
const MAX_STEP_US: u64 = 5_000;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bits at arbitrary instants, time going backwards too: the
    /// effective bits keep the ceiling and the levels.
    #[test]
    fn the_budget_keeps_the_ceiling_at_any_instants(
        pol in budget_policy(),
        c in 0..64u8,
        n in 1..4usize,
        scans in prop::collection::vec((0..4usize, any::<u64>(), 0..u64::MAX / 2), 0..200),
    ) {
        let c = pol.levels.check(Priority::new(c).unwrap()).unwrap_or(pol.levels.least_important());
        let t0 = Instant::now();
        let mut b = Budget::new(c);
        let mut holders = vec![Holder::default(); n];
        for (who, raw, at_ns) in scans {
            let clamped = clamp(raw, pol.levels, c);
            let now = t0 + Duration::from_nanos(at_ns);
            let effective = b.observe(&mut holders[who % n], clamped, now, &pol);
            check_effective(clamped, effective, &pol, c)?;
            prop_assert!(b.fill_percent(&pol) <= 100);
            let _ = b.drained(now, &pol);
        }
    }

    /// The budget's guarantee (`policy` module docs, docs/coordinator.md):
    /// from empty, the registrations of one bucket hold the ceiling level
    /// (summed over them: "two holding at once add twice") for at most the
    /// burst plus `share` of the elapsed time — with a budget; without one
    /// (`hold-ms 0`, `hold-share 100`) nothing is ever demoted. "As seen
    /// by the scans": a registration's hold is charged at its next scan,
    /// and the charge that overfills the bucket is lost, so the bound is
    /// loose by up to one scan interval per registration at each demotion
    /// and for the interval still open at the end.
    #[test]
    fn the_budget_bounds_the_share_of_the_top_level(
        pol in budget_policy(),
        c in 0..64u8,
        ticks in ticks(MAX_STEP_US),
    ) {
        let c = pol.levels.check(Priority::new(c).unwrap()).unwrap_or(pol.levels.least_important());
        let n = ticks.iter().map(|(_, b)| b.len()).max().unwrap();
        let t0 = Instant::now();
        let mut b = Budget::new(c);
        let mut holders = vec![Holder::default(); n];
        // When each one's last scan saw it hold the ceiling level.
        let mut holding_since: Vec<Option<Duration>> = vec![None; n];
        let (mut t, mut held, mut demotions, mut scans) = (Duration::ZERO, Duration::ZERO, 0u32, 0u32);
        for (step, bits) in &ticks {
            t += Duration::from_micros(*step);
            for (i, holder) in holders.iter_mut().enumerate() {
                let clamped = clamp(bits[i % bits.len()], pol.levels, c);
                let was = b.demoted();
                let effective = b.observe(holder, clamped, t0 + t, &pol);
                scans += 1;
                check_effective(clamped, effective, &pol, c)?;
                demotions += u32::from(!was && b.demoted());
                if let Some(since) = holding_since[i].take() {
                    held += t - since;
                }
                if effective & c.bit() != 0 {
                    holding_since[i] = Some(t);
                }
            }
        }
        for since in holding_since.into_iter().flatten() {
            held += t - since;
        }
        let Some(cap) = cap(&pol) else {
            prop_assert_eq!(demotions, 0, "demoted without a budget");
            return Ok(());
        };
        let share = t * u32::from(pol.hold_share) / 100;
        let per_scan = Duration::from_micros(MAX_STEP_US) * n as u32;
        let slack = per_scan * (demotions + 1) + Duration::from_nanos(u64::from(scans));
        prop_assert!(
            held <= cap + share + slack,
            "held {:?} in {:?}: more than {:?} + {:?} + {:?} ({} demotions)",
            held, t, cap, share, slack, demotions
        );
    }

    /// The burst: a registration claiming its ceiling at every scan from
    /// empty is demoted at the first scan at or after `hold / (1 - share)`,
    /// not before.
    #[test]
    fn a_continuous_holder_is_demoted_after_the_burst(
        hold_ms in 1..200u64,
        share in 0..100u8,
        steps in prop::collection::vec(1..=MAX_STEP_US, 1..600),
    ) {
        let pol = Policy {
            hold: Some(Duration::from_millis(hold_ms)),
            hold_share: share,
            ..Policy::default()
        };
        let burst = Duration::from_millis(hold_ms) * 100 / u32::from(100 - share);
        let fuzz = Duration::from_micros(1);
        let c = Priority::MOST_IMPORTANT;
        let t0 = Instant::now();
        let (mut b, mut h, mut t) = (Budget::new(c), Holder::default(), Duration::ZERO);
        b.observe(&mut h, 1, t0, &pol);
        for step in steps {
            t += Duration::from_micros(step);
            let demoted = b.observe(&mut h, 1, t0 + t, &pol) & 1 == 0;
            if t + fuzz < burst {
                prop_assert!(!demoted, "demoted at {:?}, burst {:?}", t, burst);
            }
            if t >= burst + fuzz {
                prop_assert!(demoted, "not demoted at {:?}, burst {:?}", t, burst);
            }
            if demoted {
                break;
            }
        }
    }
}

// ---------------------------------------------------------------- stall

/// One tick of the stall watch: time moves on by `dt` µs; whether it is
/// watched (at the top); how its `seq` and CPU clock change.
#[derive(Clone, Copy, Debug)]
struct Check {
    dt_us: u64,
    at_top: bool,
    seq_moves: bool,
    /// How far its CPU clock moves (backwards as garbage), `None`: unreadable.
    cpu: Option<i64>,
    /// A worker thread is runnable (waiting for a CPU) when read.
    runnable: bool,
}

fn checks(monotone: bool) -> impl Strategy<Value = Vec<Check>> {
    let cpu = if monotone {
        prop_oneof![6 => Just(Some(0)), 1 => (1..1000i64).prop_map(Some)].boxed()
    } else {
        prop_oneof![
            6 => Just(Some(0i64)),
            1 => any::<i64>().prop_map(Some),
            1 => Just(None),
        ]
        .boxed()
    };
    // Stretches of the same kind of check, so that windows pass unmoved.
    let run = (
        1..40usize,
        0..30_000u64,
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.05),
        cpu,
        prop::bool::weighted(0.1),
    )
        .prop_map(|(n, dt_us, at_top, seq_moves, cpu, runnable)| {
            vec![
                Check {
                    dt_us,
                    at_top,
                    seq_moves,
                    cpu,
                    runnable,
                };
                n
            ]
        });
    prop::collection::vec(run, 1..12).prop_map(|v| v.concat())
}

/// What each check saw and did.
struct Seen {
    t: Duration,
    at_top: bool,
    seq: u64,
    cpu: Option<u64>,
    /// The clock as read by this check, if it read it.
    read: Option<Option<u64>>,
    /// A reading would say a worker is runnable.
    runnable: bool,
    stalled: bool,
}

fn run_checks(checks: &[Check], window: Duration) -> Result<Vec<Seen>, TestCaseError> {
    let t0 = Instant::now();
    let mut s = Stall::default();
    // Both counters start near the end of their range: they wrap.
    let (mut t, mut seq, mut cpu) = (Duration::ZERO, u64::MAX - 2, u64::MAX - 500);
    let mut seen: Vec<Seen> = Vec::new();
    for ch in checks {
        t += Duration::from_micros(ch.dt_us);
        seq = seq.wrapping_add(u64::from(ch.seq_moves));
        let now_cpu = ch.cpu.map(|d| {
            cpu = cpu.wrapping_add_signed(d);
            cpu
        });
        let mut read = None;
        let was = (s.stalled(), s.stalls());
        let changed = s.check(
            t0 + t,
            ch.at_top,
            seq,
            || {
                read = Some(now_cpu);
                now_cpu.map(|cpu| Reading {
                    cpu,
                    runnable: ch.runnable,
                })
            },
            window,
        );
        prop_assert_eq!(changed, was.0 != s.stalled());
        prop_assert_eq!(s.stalls(), was.1 + u64::from(!was.0 && s.stalled()));
        seen.push(Seen {
            t,
            at_top: ch.at_top,
            seq,
            cpu: now_cpu,
            read,
            runnable: ch.runnable,
            stalled: s.stalled(),
        });
    }
    Ok(seen)
}

fn window() -> impl Strategy<Value = Duration> {
    (1..=400u64).prop_map(Duration::from_millis)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any clock (backwards, unreadable) and any `seq`: no panic, and a
    /// registration is left out only if, over the whole window before, it
    /// was at the top at every check, its `seq` never changed and every
    /// reading of its clock was the same; one whose `seq` moves, or that a
    /// reading finds unreadable, counts again at once.
    #[test]
    fn the_stall_watch_never_drops_what_it_saw_move(
        checks in checks(false),
        window in window(),
    ) {
        let seen = run_checks(&checks, window)?;
        for (i, now) in seen.iter().enumerate() {
            let before = i.checked_sub(1).map(|j| &seen[j]);
            if now.stalled && !before.is_some_and(|b| b.stalled) {
                let from = now.t.checked_sub(window);
                prop_assert!(from.is_some(), "stalled before a window passed");
                for (j, past) in seen[..=i].iter().enumerate().rev() {
                    if past.t <= from.unwrap() {
                        break;
                    }
                    prop_assert!(past.at_top, "check {j} was not at the top");
                    prop_assert_eq!(past.seq, now.seq, "seq moved at check {}", j);
                    if let Some(r) = past.read {
                        prop_assert_eq!(r, now.read.flatten(), "clock read moved at check {}", j);
                        let runnable = r.is_some() && past.runnable;
                        prop_assert!(!runnable, "check {j} read a runnable worker");
                    }
                }
                prop_assert!(now.read.flatten().is_some(), "stalled without a fresh reading");
            }
            if let Some(b) = before {
                let runnable = now.read.flatten().is_some() && now.runnable;
                if b.stalled && (now.seq != b.seq || now.read == Some(None) || runnable) {
                    prop_assert!(!now.stalled, "check {i}: moved or unreadable, still out");
                }
            }
        }
    }

    /// A real (monotone) clock: a registration that moved within the window
    /// — `seq` or clock, read or not — is never left out; one that stays at
    /// the top and does not move is left out by the first check a window
    /// after its clock's next reading was due.
    #[test]
    fn the_stall_watch_drops_exactly_the_unmoving(
        checks in checks(true),
        window in window(),
    ) {
        let seen = run_checks(&checks, window)?;
        let period = window / SAMPLES_PER_WINDOW;
        for (i, now) in seen.iter().enumerate() {
            let before = i.checked_sub(1).map(|j| &seen[j]);
            if now.stalled && !before.is_some_and(|b| b.stalled) {
                // Nothing moved over the window before.
                for past in seen[..=i].iter().rev() {
                    if past.t + window <= now.t {
                        break;
                    }
                    prop_assert!(past.seq == now.seq && past.cpu == now.cpu);
                    prop_assert!(!(past.read.is_some() && past.runnable));
                }
            }
        }
        // Each stretch at the top where nothing moves from check k on.
        let mut k = 0;
        while k < seen.len() {
            let same = |j: usize| {
                seen[j].at_top
                    && !seen[j].runnable
                    && seen[j].seq == seen[k].seq
                    && seen[j].cpu == seen[k].cpu
            };
            let mut end = k;
            while end < seen.len() && same(end) {
                end += 1;
            }
            if end > k {
                // The first check a period on (when a reading of the new
                // value is due at the latest), then a window from it.
                if let Some(due) = (k..end).find(|&j| seen[j].t >= seen[k].t + period) {
                    for now in &seen[due..end] {
                        if now.t >= seen[due].t + window {
                            prop_assert!(now.stalled, "still counted at {:?}", now.t);
                        }
                    }
                }
            }
            k = end.max(k + 1);
        }
    }

    /// The cost bound (docs/coordinator.md, "Hung processes"): the clock of
    /// a watched or stalled registration is read at most
    /// `SAMPLES_PER_WINDOW` times per window, plus once right before it is
    /// left out.
    #[test]
    fn the_stall_watch_reads_the_clock_a_bounded_number_of_times(
        checks in checks(false),
        window in window(),
    ) {
        let seen = run_checks(&checks, window)?;
        let reads: Vec<Duration> = seen.iter().filter(|s| s.read.is_some()).map(|s| s.t).collect();
        for (i, &from) in reads.iter().enumerate() {
            let within = reads[i..].iter().take_while(|&&t| t < from + window).count();
            prop_assert!(
                within <= SAMPLES_PER_WINDOW as usize + 1,
                "{within} readings in the window from {from:?}"
            );
        }
    }
}
