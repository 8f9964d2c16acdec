//! What the two coroutine models (`kcuc`, `ktuc`) share: the ss-runtime, the
//! wake-up by coroutine id, and a connection's three coroutines at its
//! priority.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Waker};

use anyhow::Context as _;
use ss_runtime::{prio, CoroutineId, JoinHandle, Levels, Priority, Runtime, SpawnError};

use super::pipeline::{Hooks, Queues};
use super::queue::Wakeup;
use super::{Policy, Setup};

/// The priority of the accept loop: the most important, so that connecting is
/// never starved by the connections' work.
pub(crate) const ACCEPT_PRIORITY: u8 = 0;

/// A waiting coroutine, remembered by id (paper: `wake(cid)`); a future polled
/// under a foreign waker (never, in these models) is remembered by its waker.
pub(crate) enum SsWake {
    Cid(CoroutineId),
    Waker(Waker),
}

impl SsWake {
    /// Wakes it through `rt` (from a thread that is not one of its workers,
    /// e.g. the `ktuc` poller).
    pub(crate) fn wake_in(self, rt: &Runtime) {
        match self {
            // A coroutine that ended meanwhile is not found; nothing to do.
            SsWake::Cid(cid) => drop(rt.wake(cid)),
            SsWake::Waker(w) => w.wake(),
        }
    }
}

impl Wakeup for SsWake {
    fn register(cx: &Context<'_>) -> Self {
        match ss_core::cid_of(cx.waker()) {
            Some(cid) => SsWake::Cid(cid),
            None => SsWake::Waker(cx.waker().clone()),
        }
    }

    /// Called on a worker of the runtime (every queue operation runs in a
    /// coroutine).
    fn wake(self) {
        match self {
            SsWake::Cid(cid) => drop(ss_runtime::wake(cid)),
            SsWake::Waker(w) => w.wake(),
        }
    }
}

/// A running ss-runtime model (what `kcuc` and `ktuc` keep until the
/// process exits).
pub(crate) struct Serving {
    pub(crate) model: &'static str,
    pub(crate) rt: Arc<Runtime>,
}

impl Serving {
    /// `--io-stats`: the runtime's I/O counters, one line on stderr.
    pub(crate) fn report(&self) {
        match self.rt.io_metrics() {
            Some(m) => eprintln!("ssbench server {}: io {m:?}", self.model),
            None => eprintln!("ssbench server {}: io: no io_uring", self.model),
        }
    }
}

/// Builds the runtime: `--workers` threads, `--levels` priorities, and the
/// idle spin of `--idle-spin-us` if given.
pub(crate) fn runtime(name: &str, setup: &Setup) -> anyhow::Result<Runtime> {
    let levels = Levels::new(setup.policy.levels).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut builder = Runtime::builder()
        .workers(setup.workers)
        .levels(levels)
        .thread_name(name)
        .adaptive_spin(!setup.spin_always)
        .reserve_always(setup.reserve_always)
        .hot_wakes(setup.hot_wakes)
        .io({
            let rb = setup.recv_buffers;
            let config = ss_runtime::io::Config::new().recv_buffers(rb.count, rb.size);
            match rb.max {
                Some(max) => config.recv_buffers_max(max),
                None => config,
            }
        });
    if let Some(spin) = setup.idle_spin {
        builder = builder.idle_spin(spin);
    }
    if let Some(after) = setup.reserve {
        builder = builder.reserve_after(after);
    }
    if let Some(period) = setup.stall_watch {
        builder = builder.stall_watch(period);
    }
    if let Some(after) = setup.nudge {
        builder = builder.nudge_after(after);
    }
    builder.build().context("building the ss-runtime")
}

/// One connection's hooks: the policy, and its coroutines, to reprioritise on
/// Hello.
pub(crate) struct ConnHooks {
    policy: Arc<Policy>,
    /// The handling and sending coroutines (set before the receiver starts).
    peers: OnceLock<[CoroutineId; 2]>,
}

impl Hooks for ConnHooks {
    type Wake = SsWake;

    async fn hello(&self, requested: u8) -> u8 {
        let granted = self.policy.grant(requested);
        let me = ss_runtime::current().await;
        let peers = self.peers.get().into_iter().flatten().copied();
        for cid in me.into_iter().chain(peers) {
            // A peer that already ended (its queue closed) is not found: fine.
            let _ = ss_runtime::reprio(cid, prio(granted));
        }
        granted
    }

    /// Spends one unit of the cooperative budget: a handler with requests
    /// always queued still gives way, at once if something more important is
    /// ready.
    async fn between_requests(&self) {
        ss_runtime::budget::consume_budget().await;
    }
}

/// A new connection's queues and hooks.
pub(crate) fn connection(policy: &Arc<Policy>) -> (Arc<Queues<SsWake>>, Arc<ConnHooks>) {
    let hooks = Arc::new(ConnHooks {
        policy: policy.clone(),
        peers: OnceLock::new(),
    });
    (Queues::new(), hooks)
}

/// Spawns a connection's three coroutines at `priority` on `rt` (`None`: the
/// calling coroutine's runtime): handle and send first, so that the receiver,
/// which may reprioritise them, knows their ids.
pub(crate) fn spawn_connection<FR, FH, FS>(
    rt: Option<&Runtime>,
    model: &str,
    priority: u8,
    queues: &Queues<SsWake>,
    hooks: &ConnHooks,
    (fr, fh, fs): (FR, FH, FS),
) where
    FR: Future<Output = ()> + Send + 'static,
    FH: Future<Output = ()> + Send + 'static,
    FS: Future<Output = ()> + Send + 'static,
{
    let p = prio(priority);
    let started = (|| {
        let h = spawn_on(rt, fh, p)?;
        let s = spawn_on(rt, fs, p)?;
        let _ = hooks.peers.set([h.cid(), s.cid()]);
        spawn_on(rt, fr, p).map(drop)
    })();
    if let Err(e) = started {
        eprintln!(
            "ssbench server {model}: cannot start a connection's coroutines ({e}); dropping it"
        );
        queues.close();
    }
}

fn spawn_on<F>(rt: Option<&Runtime>, f: F, p: Priority) -> Result<JoinHandle<()>, SpawnError>
where
    F: Future<Output = ()> + Send + 'static,
{
    match rt {
        Some(rt) => rt.spawn(f, p),
        None => ss_runtime::try_spawn(f, p),
    }
}
