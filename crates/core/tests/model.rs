//! Property test: the Executor against a plain reference scheduler (strict
//! priority, FIFO within a priority — or, on a platform that queues what a
//! poll wakes hot, hot ones first within a priority, demoted behind the
//! others after `HOT_RUN` in a row), over random sequences of spawn, wake,
//! reprio, cancel and poll, where a poll may wake another coroutine.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use proptest::prelude::*;
use ss_core::platform::{Critical, Park, Platform};
use ss_core::{
    Cancel, CoroutineId, CoroutineState, Error, Executor, Levels, Priority, Wake, HOT_RUN,
};

const LEVELS: u8 = 4;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    Yield,
    Block,
    Exit,
    /// Wake the coroutine spawned `n`-th (modulo how many there are) through
    /// its waker, then block — or yield, if that is this one.
    WakeThenBlock(usize),
}

#[derive(Clone, Debug)]
enum Op {
    Spawn(u8, Vec<Step>),
    Wake(usize),
    Reprio(usize, u8),
    Cancel(usize),
    RunOne,
}

fn op() -> impl Strategy<Value = Op> {
    let step = prop_oneof![
        Just(Step::Yield),
        Just(Step::Block),
        Just(Step::Exit),
        any::<usize>().prop_map(Step::WakeThenBlock),
    ];
    prop_oneof![
        2 => (0..LEVELS, prop::collection::vec(step, 0..5)).prop_map(|(p, s)| Op::Spawn(p, s)),
        2 => any::<usize>().prop_map(Op::Wake),
        1 => (any::<usize>(), 0..LEVELS).prop_map(|(i, p)| Op::Reprio(i, p)),
        1 => any::<usize>().prop_map(Op::Cancel),
        4 => Just(Op::RunOne),
    ]
}

/// The wakers the coroutines last polled with, by spawn order.
type Wakers = Arc<Mutex<Vec<Option<Waker>>>>;

/// A coroutine following a script: each poll logs its tag and takes the next step
/// (the script ending means exit).
struct Scripted {
    tag: usize,
    steps: VecDeque<Step>,
    log: Arc<Mutex<Vec<usize>>>,
    wakers: Wakers,
}

impl Future for Scripted {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.log.lock().unwrap().push(self.tag);
        self.wakers.lock().unwrap()[self.tag] = Some(cx.waker().clone());
        match self.steps.pop_front().unwrap_or(Step::Exit) {
            Step::Exit => Poll::Ready(()),
            Step::Block => Poll::Pending,
            Step::Yield => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Step::WakeThenBlock(n) => {
                let waker = {
                    let wakers = self.wakers.lock().unwrap();
                    wakers[n % wakers.len()].clone()
                };
                if let Some(w) = waker {
                    w.wake();
                }
                Poll::Pending
            }
        }
    }
}

/// A platform that never sleeps and, if `hot`, asks for what a poll wakes to
/// be queued hot (as the Linux runtime's does).
struct ModelPlatform {
    hot: bool,
    polling: AtomicBool,
}

impl Park for ModelPlatform {
    fn park(&self) {}
    fn unpark_one(&self) {}
    fn polling(&self, on: bool) {
        self.polling.store(on, Ordering::Relaxed);
    }
    fn hot_wake(&self) -> bool {
        self.hot && self.polling.load(Ordering::Relaxed)
    }
}

impl Critical for ModelPlatform {
    type Guard = ();
    fn enter(&self) {}
}

impl Platform for ModelPlatform {}

#[derive(Clone, Copy, PartialEq, Debug)]
enum RefState {
    Ready,
    Blocked,
    Exited,
}

/// One level of the reference: its queue, of which the first `hot` are hot,
/// and the hot pops in a row since a cold one (or since it was empty).
#[derive(Clone, Default)]
struct Level {
    q: VecDeque<usize>,
    hot: usize,
    run: u32,
}

impl Level {
    fn pop(&mut self) -> Option<usize> {
        if self.hot > 0 && self.run < HOT_RUN {
            self.hot -= 1;
            self.run += 1;
        } else {
            // The hot ones (if any) join the tail, in their order.
            self.q.rotate_left(self.hot);
            self.hot = 0;
            self.run = 0;
        }
        let i = self.q.pop_front();
        if self.q.is_empty() {
            self.run = 0;
        }
        i
    }
}

/// The reference: the obvious scheduler, written for clarity.
#[derive(Default)]
struct Reference {
    levels: Vec<Level>,
    prio: Vec<u8>,
    state: Vec<RefState>,
    steps: Vec<VecDeque<Step>>,
}

impl Reference {
    fn new() -> Self {
        Reference {
            levels: vec![Level::default(); LEVELS as usize],
            ..Default::default()
        }
    }
    fn bitmap(&self) -> u64 {
        self.levels
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.q.is_empty())
            .map(|(i, _)| 1u64 << i)
            .sum()
    }
    fn len(&self) -> usize {
        self.levels.iter().map(|l| l.q.len()).sum()
    }
    fn push_cold(&mut self, i: usize) {
        self.levels[self.prio[i] as usize].q.push_back(i);
    }
    fn push_hot(&mut self, i: usize) {
        let l = &mut self.levels[self.prio[i] as usize];
        l.q.push_front(i);
        l.hot += 1;
    }
    fn pop(&mut self) -> Option<usize> {
        self.levels
            .iter_mut()
            .find(|l| !l.q.is_empty())
            .and_then(Level::pop)
    }
    fn unqueue(&mut self, i: usize) {
        for l in &mut self.levels {
            if let Some(at) = l.q.iter().position(|&x| x == i) {
                l.q.remove(at);
                if at < l.hot {
                    l.hot -= 1;
                }
                if l.q.is_empty() {
                    l.run = 0;
                }
            }
        }
    }
    /// Takes coroutine `i`'s next step after it was polled (`hot`: the
    /// platform queues what a poll wakes hot).
    fn step(&mut self, i: usize, hot: bool) {
        match self.steps[i].pop_front().unwrap_or(Step::Exit) {
            Step::Exit => self.state[i] = RefState::Exited,
            Step::Block => self.state[i] = RefState::Blocked,
            Step::Yield => self.push_cold(i),
            Step::WakeThenBlock(n) => {
                let j = n % self.state.len();
                if j == i {
                    // Woken during its own poll: a yield.
                    self.push_cold(i);
                    return;
                }
                if self.state[j] == RefState::Blocked {
                    self.state[j] = RefState::Ready;
                    if hot {
                        self.push_hot(j);
                    } else {
                        self.push_cold(j);
                    }
                }
                self.state[i] = RefState::Blocked;
            }
        }
    }
}

fn p(l: u8) -> Priority {
    Priority::new(l).unwrap()
}

fn run(ops: Vec<Op>, hot: bool) -> Result<(), TestCaseError> {
    let exec = Executor::with_platform(
        Levels::new(LEVELS).unwrap(),
        ModelPlatform {
            hot,
            polling: AtomicBool::new(false),
        },
    );
    let mut cpu = exec.poller();
    let log = Arc::new(Mutex::new(Vec::new()));
    let wakers: Wakers = Arc::default();
    let mut model = Reference::new();
    let mut cids: Vec<CoroutineId> = Vec::new();
    for op in ops {
        match op {
            Op::Spawn(prio, steps) => {
                let tag = cids.len();
                let fut = Scripted {
                    tag,
                    steps: steps.iter().copied().collect(),
                    log: log.clone(),
                    wakers: wakers.clone(),
                };
                wakers.lock().unwrap().push(None);
                cids.push(exec.spawn(fut, p(prio)).unwrap());
                model.prio.push(prio);
                model.push_cold(tag);
                model.state.push(RefState::Ready);
                model.steps.push(steps.into_iter().collect());
            }
            Op::Wake(i) if !cids.is_empty() => {
                let i = i % cids.len();
                let got = exec.wake(cids[i]);
                let want = match model.state[i] {
                    RefState::Blocked => {
                        model.state[i] = RefState::Ready;
                        model.push_cold(i);
                        Ok(Wake::Queued)
                    }
                    RefState::Ready => Ok(Wake::AlreadyReady),
                    RefState::Exited => Err(Error::NoSuchCoroutine(cids[i])),
                };
                prop_assert_eq!(got, want);
            }
            Op::Reprio(i, prio) if !cids.is_empty() => {
                let i = i % cids.len();
                let got = exec.reprio(cids[i], p(prio));
                if model.state[i] == RefState::Exited {
                    prop_assert_eq!(got, Err(Error::NoSuchCoroutine(cids[i])));
                } else {
                    prop_assert_eq!(got, Ok(()));
                    let moves = model.state[i] == RefState::Ready && model.prio[i] != prio;
                    if moves {
                        model.unqueue(i);
                    }
                    model.prio[i] = prio;
                    if moves {
                        model.push_cold(i);
                    }
                }
            }
            Op::Cancel(i) if !cids.is_empty() => {
                let i = i % cids.len();
                let got = exec.cancel(cids[i]);
                if model.state[i] == RefState::Exited {
                    prop_assert_eq!(got, Err(Error::NoSuchCoroutine(cids[i])));
                } else {
                    prop_assert_eq!(got, Ok(Cancel::Dropped));
                    model.unqueue(i);
                    model.state[i] = RefState::Exited;
                }
            }
            Op::RunOne => {
                let before = log.lock().unwrap().len();
                let ran = cpu.run_once();
                let next = model.pop();
                prop_assert_eq!(ran, next.is_some());
                if let Some(i) = next {
                    prop_assert_eq!(log.lock().unwrap()[before], i, "wrong coroutine picked");
                    model.step(i, hot);
                }
            }
            _ => {}
        }
        prop_assert_eq!(exec.ready_bitmap().bits(), model.bitmap());
        prop_assert_eq!(exec.ready_len(), model.len());
        for (i, &cid) in cids.iter().enumerate() {
            let want = match model.state[i] {
                RefState::Ready => Ok(CoroutineState::Ready),
                RefState::Blocked => Ok(CoroutineState::Blocked),
                RefState::Exited => Err(Error::NoSuchCoroutine(cid)),
            };
            prop_assert_eq!(exec.state(cid), want);
        }
    }
    // Drain: whatever is left runs in the reference's order.
    let before = log.lock().unwrap().len();
    cpu.run_until_idle();
    let mut want = Vec::new();
    while let Some(i) = model.pop() {
        want.push(i);
        model.step(i, hot);
    }
    prop_assert_eq!(&log.lock().unwrap()[before..], &want[..]);
    Ok(())
}

proptest! {
    // 512 cases; under Miri 2 (each ~20 s there: the CI's time budget). The
    // hot path's unsafe code (the head link and the splice) is also walked by
    // the deterministic hot-chain test below.
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 512 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn executor_matches_the_reference_scheduler(
        ops in prop::collection::vec(op(), 0..if cfg!(miri) { 40 } else { 120 })
    ) {
        run(ops, false)?;
    }

    #[test]
    fn executor_with_hot_wakes_matches_the_reference_scheduler(
        ops in prop::collection::vec(op(), 0..if cfg!(miri) { 40 } else { 160 })
    ) {
        run(ops, true)?;
    }
}

/// A ring of coroutines that keep waking each other from their polls (every
/// wake-up hot) while two cold ones wait at the same level: the ring gives
/// way after `HOT_RUN` pops in a row, and the exact order matches the
/// reference's.
#[test]
fn a_hot_chain_gives_way_to_the_waiting_after_hot_run_pops() {
    const RING: usize = 5;
    let mut ops = Vec::new();
    for tag in 0..RING {
        let mut steps = vec![Step::Block];
        steps.extend((0..3 * HOT_RUN as usize).map(|_| Step::WakeThenBlock((tag + 1) % RING)));
        ops.push(Op::Spawn(0, steps));
    }
    ops.extend((0..RING).map(|_| Op::RunOne));
    // Starts the ring: wakes coroutine 0 from its poll.
    ops.push(Op::Spawn(0, vec![Step::WakeThenBlock(0)]));
    ops.push(Op::RunOne);
    // The waiting ones, queued cold behind the ring's hot head.
    ops.push(Op::Spawn(0, vec![]));
    ops.push(Op::Spawn(0, vec![]));
    ops.extend((0..4 * HOT_RUN).map(|_| Op::RunOne));
    run(ops, true).unwrap();
}
