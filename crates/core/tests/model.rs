//! Property test: the Executor against a plain reference scheduler (strict
//! priority, FIFO within a priority), over random sequences of spawn, wake,
//! reprio, cancel and poll.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use proptest::prelude::*;
use ss_core::{Cancel, CoroutineId, CoroutineState, Error, Executor, Levels, Priority, Wake};

const LEVELS: u8 = 4;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    Yield,
    Block,
    Exit,
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
    let step = prop_oneof![Just(Step::Yield), Just(Step::Block), Just(Step::Exit)];
    prop_oneof![
        2 => (0..LEVELS, prop::collection::vec(step, 0..5)).prop_map(|(p, s)| Op::Spawn(p, s)),
        2 => any::<usize>().prop_map(Op::Wake),
        1 => (any::<usize>(), 0..LEVELS).prop_map(|(i, p)| Op::Reprio(i, p)),
        1 => any::<usize>().prop_map(Op::Cancel),
        4 => Just(Op::RunOne),
    ]
}

/// A coroutine following a script: each poll logs its tag and takes the next step
/// (the script ending means exit).
struct Scripted {
    tag: usize,
    steps: VecDeque<Step>,
    log: Arc<Mutex<Vec<usize>>>,
}

impl Future for Scripted {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.log.lock().unwrap().push(self.tag);
        match self.steps.pop_front().unwrap_or(Step::Exit) {
            Step::Exit => Poll::Ready(()),
            Step::Block => Poll::Pending,
            Step::Yield => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum RefState {
    Ready,
    Blocked,
    Exited,
}

/// The reference: the obvious scheduler, written for clarity.
#[derive(Default)]
struct Reference {
    queues: Vec<VecDeque<usize>>,
    prio: Vec<u8>,
    state: Vec<RefState>,
    steps: Vec<VecDeque<Step>>,
}

impl Reference {
    fn new() -> Self {
        Reference {
            queues: vec![VecDeque::new(); LEVELS as usize],
            ..Default::default()
        }
    }
    fn bitmap(&self) -> u64 {
        self.queues
            .iter()
            .enumerate()
            .filter(|(_, q)| !q.is_empty())
            .map(|(i, _)| 1u64 << i)
            .sum()
    }
    fn unqueue(&mut self, i: usize) {
        for q in &mut self.queues {
            q.retain(|&x| x != i);
        }
    }
}

fn p(l: u8) -> Priority {
    Priority::new(l).unwrap()
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let exec = Executor::with_platform(
        Levels::new(LEVELS).unwrap(),
        ss_core::platform::SpinPlatform,
    );
    let mut cpu = exec.poller();
    let log = Arc::new(Mutex::new(Vec::new()));
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
                };
                cids.push(exec.spawn(fut, p(prio)).unwrap());
                model.queues[prio as usize].push_back(tag);
                model.prio.push(prio);
                model.state.push(RefState::Ready);
                model.steps.push(steps.into_iter().collect());
            }
            Op::Wake(i) if !cids.is_empty() => {
                let i = i % cids.len();
                let got = exec.wake(cids[i]);
                let want = match model.state[i] {
                    RefState::Blocked => {
                        model.state[i] = RefState::Ready;
                        model.queues[model.prio[i] as usize].push_back(i);
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
                    if model.state[i] == RefState::Ready && model.prio[i] != prio {
                        model.unqueue(i);
                        model.queues[prio as usize].push_back(i);
                    }
                    model.prio[i] = prio;
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
                let next = model.queues.iter_mut().find_map(|q| q.pop_front());
                prop_assert_eq!(ran, next.is_some());
                if let Some(i) = next {
                    prop_assert_eq!(log.lock().unwrap()[before], i, "wrong coroutine picked");
                    match model.steps[i].pop_front().unwrap_or(Step::Exit) {
                        Step::Exit => model.state[i] = RefState::Exited,
                        Step::Block => model.state[i] = RefState::Blocked,
                        Step::Yield => model.queues[model.prio[i] as usize].push_back(i),
                    }
                }
            }
            _ => {}
        }
        prop_assert_eq!(exec.ready_bitmap().bits(), model.bitmap());
        prop_assert_eq!(
            exec.ready_len(),
            model.queues.iter().map(VecDeque::len).sum::<usize>()
        );
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
    while let Some(i) = model.queues.iter_mut().find_map(|q| q.pop_front()) {
        want.push(i);
        match model.steps[i].pop_front().unwrap_or(Step::Exit) {
            Step::Yield => model.queues[model.prio[i] as usize].push_back(i),
            Step::Exit => model.state[i] = RefState::Exited,
            Step::Block => model.state[i] = RefState::Blocked,
        }
    }
    prop_assert_eq!(&log.lock().unwrap()[before..], &want[..]);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 512 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn executor_matches_the_reference_scheduler(
        ops in prop::collection::vec(op(), 0..if cfg!(miri) { 40 } else { 120 })
    ) {
        run(ops)?;
    }
}
