//! Unit tests of the driver, through a real runtime: results and errnos,
//! wake-ups by cid and by foreign waker, cancellation, batching, shutdown.

use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::{prio, Runtime};

fn rt(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().unwrap()
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 succeeded: two fresh descriptors that only we own.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A connected loopback TCP pair (std sockets, blocking).
fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

/// Runs the calling worker's ring until the kernel holds none of its
/// operations (completions reaped, cancellations done), for at most 5 s;
/// returns the ring.
fn settle_local(what: &str) -> Arc<driver::Ring> {
    let ring = driver::current_local().unwrap().ring().clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ring.in_kernel() != 0 {
        assert!(std::time::Instant::now() < deadline, "{what}");
        driver::run_local();
        std::thread::yield_now();
    }
    ring
}

/// A buffer that counts how many of its kind are alive.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        Counted(live.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A receive whose memory is counted, to see when the driver frees it.
struct CountedRecv {
    inner: ReadInto,
    _count: Counted,
}

impl Operation for CountedRecv {
    type Output = (std::io::Result<usize>, Vec<u8>);
    fn sqe(&mut self) -> io_uring::squeue::Entry {
        self.inner.sqe()
    }
    fn complete(self, res: i32) -> Self::Output {
        self.inner.complete(res)
    }
    fn fail(self, e: std::io::Error) -> Self::Output {
        self.inner.fail(e)
    }
}

fn counted_recv(fd: impl AsFd, live: &Arc<AtomicUsize>) -> Op<CountedRecv> {
    Op::new(CountedRecv {
        inner: ReadInto::recv(fd.as_fd().as_raw_fd(), Vec::with_capacity(64)),
        _count: Counted::new(live),
    })
}

#[test]
fn read_on_a_pipe_completes_with_the_byte_count() {
    let rt = rt(1);
    let (rx, tx) = pipe();
    let (n, buf) = rt.block_on(async move {
        let reader = crate::spawn(
            async move { read(&rx, Vec::with_capacity(100)).await },
            prio(1),
        );
        crate::yield_now().await; // the reader blocks first
        let (w, _) = write(&tx, b"twelve bytes".to_vec()).await;
        assert_eq!(w.unwrap(), 12);
        reader.await.unwrap()
    });
    assert_eq!(n.unwrap(), 12);
    assert_eq!(buf, b"twelve bytes");
}

#[test]
fn reads_append_and_refuse_a_full_buffer() {
    let rt = rt(1);
    let (rx, tx) = pipe();
    rt.block_on(async move {
        let mut buf = Vec::with_capacity(8);
        buf.extend_from_slice(b"ab");
        let _ = write(&tx, b"cd".to_vec()).await;
        let (n, buf) = read(&rx, buf).await;
        assert_eq!((n.unwrap(), &buf[..]), (2, &b"abcd"[..]));
        let (r, full) = read(&rx, vec![0; 4]).await;
        let e = r.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("with_capacity"), "{e}");
        assert_eq!(full.len(), 4);
    });
}

#[test]
fn errors_carry_the_errno() {
    let rt = rt(1);
    rt.block_on(async {
        let (rx, tx) = pipe();
        drop(tx);
        // EOF on a pipe whose writer is gone.
        let (n, _) = read(&rx, Vec::with_capacity(4)).await;
        assert_eq!(n.unwrap(), 0);
        // A closed descriptor: EBADF from the kernel, through the CQE. (Not the
        // number `rx` had: tests run in parallel, and another may reuse it.)
        drop(rx);
        // SAFETY: a descriptor number far above any open one; the kernel rejects
        // it, nothing is read or written through it.
        let stale = unsafe { std::os::fd::BorrowedFd::borrow_raw(i32::MAX - 1) };
        let (r, _) = read(stale, Vec::with_capacity(4)).await;
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EBADF));
        let (r, _) = send(stale, vec![1]).await;
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EBADF));
    });
}

#[test]
fn every_socket_op_over_loopback() {
    let rt = rt(2);
    rt.block_on(async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = crate::spawn(
            async move {
                let (conn, peer) = accept(&listener).await.unwrap();
                assert!(peer.ip().is_loopback());
                let (n, buf) = recv(&conn, Vec::with_capacity(16)).await;
                let n = n.unwrap();
                let (m, _) = send(&conn, buf[..n].to_vec()).await;
                assert_eq!(m.unwrap(), n);
                close(conn).await.unwrap();
            },
            prio(2),
        );
        // SAFETY: plain socket(2); the result is checked and then owned once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor only we own.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        connect(&sock, addr).await.unwrap();
        let (n, _) = send(&sock, b"echo".to_vec()).await;
        assert_eq!(n.unwrap(), 4);
        let (n, buf) = recv(&sock, Vec::with_capacity(16)).await;
        assert_eq!((n.unwrap(), &buf[..]), (4, &b"echo"[..]));
        server.await.unwrap();
        // The server closed through the ring: end of stream.
        let (n, _) = recv(&sock, Vec::with_capacity(16)).await;
        assert_eq!(n.unwrap(), 0);
    });
}

#[test]
fn connect_refused_is_an_errno() {
    let rt = rt(1);
    rt.block_on(async {
        // A port nobody listens on: bind, learn the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // SAFETY: as in `every_socket_op_over_loopback`.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        // SAFETY: a fresh descriptor only we own.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let e = connect(&sock, port).await.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED));
    });
}

#[test]
fn cancelled_recv_frees_its_buffer_and_leaves_the_socket_usable() {
    let rt = rt(2);
    let live = Arc::new(AtomicUsize::new(0));
    let (a, mut b) = tcp_pair();
    let a = Arc::new(a);
    let driver = rt.inner().io().unwrap().shared().clone();
    {
        let (a, live) = (a.clone(), live.clone());
        let waiter = rt
            .spawn(async move { counted_recv(&*a, &live).await }, prio(3))
            .unwrap();
        // Let it submit and block, then cancel the coroutine: its future (and the
        // op in flight) is dropped on the executor.
        for _ in 0..1000 {
            if rt.executor().blocked().contains(&waiter.cid()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(rt.executor().blocked().contains(&waiter.cid()));
        rt.executor().cancel(waiter.cid()).unwrap();
    }
    // The driver frees the buffer when the cancellation completes.
    for _ in 0..1000 {
        if live.load(Ordering::SeqCst) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        live.load(Ordering::SeqCst),
        0,
        "the cancelled recv's buffer was not freed"
    );
    assert!(driver.stats.completions.load(Ordering::Relaxed) >= 1);
    // Data sent after the cancellation is not swallowed by the dead recv.
    b.write_all(b"after").unwrap();
    let (n, buf) = rt.block_on({
        let a = a.clone();
        async move { recv(&*a, Vec::with_capacity(16)).await }
    });
    assert_eq!((n.unwrap(), &buf[..]), (5, &b"after"[..]));
    // And the other direction still works.
    let (n, _) = rt.block_on(async move { send(&*a, b"back".to_vec()).await });
    assert_eq!(n.unwrap(), 4);
    let mut got = [0; 4];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"back");
}

#[test]
fn a_foreign_waker_is_woken_too() {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let rt = rt(1);
    let (rx, tx) = pipe();
    let (rx, tx) = (Arc::new(rx), Arc::new(tx));
    let got = rt.block_on(async move {
        // FuturesUnordered polls its futures with a waker of its own: no cid.
        let mut set = FuturesUnordered::new();
        for _ in 0..2 {
            let rx = rx.clone();
            set.push(async move { read(&*rx, Vec::with_capacity(1)).await.0.unwrap() });
        }
        let writer = crate::spawn(
            async move {
                for _ in 0..2 {
                    crate::yield_now().await;
                    let _ = write(&*tx, b"x".to_vec()).await;
                }
            },
            prio(5),
        );
        let mut total = 0;
        while let Some(n) = set.next().await {
            total += n;
        }
        writer.await.unwrap();
        total
    });
    assert_eq!(got, 2);
}

#[test]
fn the_async_form_wakes_the_named_coroutine() {
    let rt = rt(1);
    let (rx, tx) = pipe();
    rt.block_on(async move {
        let me = crate::current().await.unwrap();
        let pending = crate::read!(&rx, Vec::with_capacity(8), me);
        // Submitted already: the write below completes it while we do not poll it.
        let (n, _) = crate::write!(&tx, b"now".to_vec());
        assert_eq!(n.unwrap(), 3);
        let (n, buf) = pending.await;
        assert_eq!((n.unwrap(), &buf[..]), (3, &b"now"[..]));
        // The async write form too.
        let (n, _) = crate::write!(&tx, b"z".to_vec(), me).await;
        assert_eq!(n.unwrap(), 1);
    });
}

#[test]
fn outside_a_runtime_ops_fail_with_a_message() {
    let (rx, _tx) = pipe();
    let (r, _) = futures_util::FutureExt::now_or_never(read(&rx, Vec::with_capacity(1))).unwrap();
    let e = r.unwrap_err();
    assert!(e.to_string().contains("block_on"), "{e}");
}

#[test]
fn a_burst_of_ready_coroutines_shares_one_submission() {
    let rt = rt(1);
    let shared = rt.inner().io().unwrap().shared().clone();
    let n = 16;
    rt.block_on(async move {
        // Spawn a burst, then let them all run on the one worker.
        let hs: Vec<_> = (0..n)
            .map(|_| crate::spawn(async { ops::nop().await.unwrap() }, prio(2)))
            .collect();
        for h in hs {
            h.await.unwrap();
        }
    });
    let calls = shared.stats.submit_calls.load(Ordering::Relaxed);
    let sqes = shared.stats.submitted.load(Ordering::Relaxed);
    assert!(sqes >= n, "{sqes}");
    assert!(shared.stats.deferred.load(Ordering::Relaxed) > 0);
    // Not one syscall per operation (exact counts depend on timing).
    assert!(calls < sqes, "{calls} submit calls for {sqes} SQEs");
}

/// Polls `f`, counting its polls in `polls`.
async fn count_polls<F: std::future::Future>(f: F, polls: &AtomicUsize) -> F::Output {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        polls.fetch_add(1, Ordering::SeqCst);
        f.as_mut().poll(cx)
    })
    .await
}

#[test]
fn an_op_that_completes_as_it_is_submitted_needs_no_wake_up() {
    // Alone on its worker, an op is submitted at its first poll; a NOP and a
    // send into a socket with room complete in that submission, and the poll
    // that submitted them takes the result: one poll each, nobody woken.
    let rt = rt(1);
    let shared = rt.inner().io().unwrap().shared().clone();
    let (a, mut b) = tcp_pair();
    let polls = rt.block_on(async move {
        let nop = AtomicUsize::new(0);
        count_polls(ops::nop(), &nop).await.unwrap();
        let sent = AtomicUsize::new(0);
        let (r, _) = count_polls(send(&a, b"inline".to_vec()), &sent).await;
        assert_eq!(r.unwrap(), 6);
        // A receive with nothing to read yet waits, and its completion wakes
        // it (the waiter its first poll named).
        let received = AtomicUsize::new(0);
        let reader = std::thread::spawn(move || {
            let mut got = [0u8; 6];
            b.read_exact(&mut got).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            b.write_all(b"back").unwrap();
            got
        });
        let (r, buf) = count_polls(recv(&a, Vec::with_capacity(16)), &received).await;
        assert_eq!(r.unwrap(), 4);
        assert_eq!(&buf, b"back");
        assert_eq!(&reader.join().unwrap(), b"inline");
        [nop, sent, received].map(|p| p.into_inner())
    });
    assert_eq!(polls[0], 1, "the NOP's polls");
    assert_eq!(polls[1], 1, "the send's polls");
    assert!(polls[2] >= 2, "the receive waited: {} polls", polls[2]);
    assert!(shared.stats.inline.load(Ordering::Relaxed) >= 2);
}

#[test]
fn shutdown_with_operations_pending_leaks_nothing() {
    let live = Arc::new(AtomicUsize::new(0));
    let rt = rt(2);
    let inner = rt.inner().clone();
    let (a, _b) = tcp_pair();
    let a = Arc::new(a);
    for _ in 0..8 {
        let (a, live) = (a.clone(), live.clone());
        rt.spawn(async move { counted_recv(&*a, &live).await }, prio(4))
            .unwrap();
    }
    for _ in 0..1000 {
        if inner.io().unwrap().in_kernel() == 8 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(inner.io().unwrap().in_kernel(), 8);
    rt.shutdown();
    let driver = inner.io().unwrap();
    assert!(driver.rings_closed());
    assert_eq!(driver.in_kernel(), 0);
    assert_eq!(
        live.load(Ordering::SeqCst),
        0,
        "buffers outlived the driver's shutdown"
    );
    // Idempotent; and new operations are refused with a reason.
    driver.shutdown();
    let e = driver.shared().rings()[0]
        .register(
            driver::Waiter::Waker(futures_util::task::noop_waker()),
            false,
        )
        .unwrap_err();
    assert!(e.to_string().contains("shut down"), "{e}");
}

/// Prints what batching buys (`cargo test -p ss-runtime --release -- --ignored
/// --nocapture measure`). Not a pass/fail test: timings do not belong in tests.
#[test]
#[ignore]
fn measure_nop_batching() {
    for batch in [1u32, 32] {
        let rt = Runtime::builder()
            .workers(1)
            .io(Config::default().submit_batch(batch))
            .build()
            .unwrap();
        let shared = rt.inner().io().unwrap().shared().clone();
        let coroutines = 64;
        let rounds = 200;
        let t = std::time::Instant::now();
        rt.block_on(async move {
            let hs: Vec<_> = (0..coroutines)
                .map(|_| {
                    crate::spawn(
                        async move {
                            for _ in 0..rounds {
                                ops::nop().await.unwrap();
                            }
                        },
                        prio(2),
                    )
                })
                .collect();
            for h in hs {
                h.await.unwrap();
            }
        });
        let ops = coroutines * rounds;
        let el = t.elapsed();
        println!(
            "submit_batch {batch:>2}: {ops} NOPs from {coroutines} coroutines in {el:?} \
             ({:.0} ns/op), {} submit calls for {} SQEs, {} deferred",
            el.as_nanos() as f64 / ops as f64,
            shared.stats.submit_calls.load(Ordering::Relaxed),
            shared.stats.submitted.load(Ordering::Relaxed),
            shared.stats.deferred.load(Ordering::Relaxed),
        );
    }
}

/// Prints the round-trip cost of a completion (reaped by the ring's owner):
/// two coroutines ping-pong one byte over two pipes (`cargo test -p ss-runtime
/// --release -- --ignored --nocapture measure`).
#[test]
#[ignore]
fn measure_pipe_ping_pong() {
    for workers in [1, 2] {
        let rt = rt(workers);
        let (a_rx, a_tx) = pipe();
        let (b_rx, b_tx) = pipe();
        let rounds = 2000;
        let t = std::time::Instant::now();
        rt.block_on(async move {
            let echo = crate::spawn(
                async move {
                    let mut buf = Vec::with_capacity(1);
                    for _ in 0..rounds {
                        buf.clear();
                        let (n, b) = read(&a_rx, buf).await;
                        assert_eq!(n.unwrap(), 1);
                        let (_, b) = write(&b_tx, b).await;
                        buf = b;
                    }
                },
                prio(1),
            );
            let mut buf = vec![1u8];
            for _ in 0..rounds {
                let (_, b) = write(&a_tx, buf).await;
                let mut b = b;
                b.clear();
                let (n, b) = read(&b_rx, b).await;
                assert_eq!(n.unwrap(), 1);
                buf = b;
            }
            echo.await.unwrap();
        });
        println!(
            "{workers} worker(s): pipe ping-pong {:.1} µs per round trip (4 operations)",
            t.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
        );
    }
}

/// Busy-waits (without yielding: keeps this worker to itself) until `flag`.
fn hold_worker_until(flag: &AtomicUsize, value: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while flag.load(Ordering::SeqCst) < value {
        assert!(std::time::Instant::now() < deadline, "timed out");
        std::hint::spin_loop();
    }
}

/// Polls `op` once (submitting it on this worker's ring), then flushes it.
async fn start<T: Operation>(op: &mut Op<T>) {
    std::future::poll_fn(|cx| {
        assert!(std::future::Future::poll(std::pin::Pin::new(&mut *op), cx).is_pending());
        std::task::Poll::Ready(())
    })
    .await;
    op.submit_queued();
}

#[test]
fn an_op_dropped_on_another_worker_is_cancelled_by_its_owner() {
    type Slot = Arc<std::sync::Mutex<Option<Op<CountedRecv>>>>;
    let rt = rt(2);
    let live = Arc::new(AtomicUsize::new(0));
    let (a, mut b) = tcp_pair();
    let a = Arc::new(a);
    let step = Arc::new(AtomicUsize::new(0));
    let slot: Slot = Arc::new(std::sync::Mutex::new(None));
    let owner = Arc::new(std::sync::Mutex::new(None));
    std::thread::scope(|s| {
        // Spawns the dropper once the owner holds its worker, from outside
        // any poll: a spawn from inside the owner's poll leaves waking a
        // parked worker to the end of that poll (`Park::defer_unpark`), which
        // the hold below delays for as long as it lasts.
        let (rt2, slot2, step2, owner2) = (&rt, slot.clone(), step.clone(), owner.clone());
        let helper = s.spawn(move || {
            hold_worker_until(&step2, 1);
            let owner = owner2.lock().unwrap().expect("set before step 1");
            rt2.spawn(
                async move {
                    // On the other worker: the owner's is held.
                    assert_ne!(std::thread::current().id(), owner);
                    drop(slot2.lock().unwrap().take());
                    step2.store(2, Ordering::SeqCst);
                },
                prio(0),
            )
            .unwrap()
        });
        let (a2, live2, step2, slot2) = (a.clone(), live.clone(), step.clone(), slot.clone());
        rt.block_on(async move {
            let mut op = counted_recv(&*a2, &live2);
            start(&mut op).await;
            *owner.lock().unwrap() = Some(std::thread::current().id());
            *slot2.lock().unwrap() = Some(op);
            step2.store(1, Ordering::SeqCst);
            hold_worker_until(&step2, 2);
        });
        let dropper = helper.join().unwrap();
        rt.block_on(dropper).unwrap();
    });
    assert!(slot.lock().unwrap().is_none());
    // The owner submits the cancellation and frees the buffer on completion.
    for _ in 0..2000 {
        if live.load(Ordering::SeqCst) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(live.load(Ordering::SeqCst), 0, "the buffer was not freed");
    assert_eq!(rt.inner().io().unwrap().in_kernel(), 0);
    // The cancelled receive swallows nothing.
    b.write_all(b"after").unwrap();
    let (n, buf) = rt.block_on(async move { recv(&*a, Vec::with_capacity(16)).await });
    assert_eq!((n.unwrap(), &buf[..]), (5, &b"after"[..]));
}

#[test]
fn an_unpark_before_the_park_makes_a_worker_park_return_at_once() {
    let rt = rt(1);
    let exec = rt.inner().exec.clone();
    rt.block_on(async move {
        use ss_core::platform::Park;
        // On the worker, whose park sleeps on its ring: the banked permit makes
        // it return at once (else this test hangs).
        exec.platform().unpark_one();
        exec.platform().park();
    });
}

#[test]
fn a_parked_worker_is_woken_by_its_own_timer() {
    let rt = Runtime::builder()
        .workers(1)
        .idle_spin(Duration::ZERO)
        .build()
        .unwrap();
    let t = std::time::Instant::now();
    // The only worker parks in its ring at once; nothing but the timer's
    // completion can wake it.
    rt.block_on(crate::time::sleep(Duration::from_millis(30)));
    let el = t.elapsed();
    assert!(el >= Duration::from_millis(30), "{el:?}");
    assert!(el < Duration::from_secs(5), "{el:?}");
}

#[test]
fn shutdown_with_operations_in_flight_on_every_worker_frees_everything() {
    let live = Arc::new(AtomicUsize::new(0));
    let rt = rt(2);
    let inner = rt.inner().clone();
    let (a, _b) = tcp_pair();
    let a = Arc::new(a);
    let started = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let (a, live, started) = (a.clone(), live.clone(), started.clone());
        rt.spawn(
            async move {
                let mut op = counted_recv(&*a, &live);
                start(&mut op).await;
                // Keep this worker until the other coroutine started its op on
                // the other worker.
                started.fetch_add(1, Ordering::SeqCst);
                hold_worker_until(&started, 2);
                op.await
            },
            prio(4),
        )
        .unwrap();
    }
    let driver = inner.io().unwrap();
    for _ in 0..2000 {
        if driver.in_kernel() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let per_ring: Vec<usize> = driver
        .shared()
        .rings()
        .iter()
        .map(|r| r.in_kernel())
        .collect();
    assert_eq!(per_ring, [1, 1]);
    rt.shutdown();
    assert!(driver.rings_closed());
    assert_eq!(driver.in_kernel(), 0);
    assert_eq!(live.load(Ordering::SeqCst), 0, "buffers outlived shutdown");
}

// ---- pooled receives (`pool`) ----

/// A runtime whose workers' pools have `count` buffers of `size` bytes and
/// do not grow.
fn rt_pool(workers: usize, count: u16, size: u32) -> Runtime {
    rt_growing_pool(workers, count, 0, size)
}

/// A runtime whose workers' pools start with `count` buffers of `size` bytes
/// and grow to `max`.
fn rt_growing_pool(workers: usize, count: u16, max: u16, size: u32) -> Runtime {
    Runtime::builder()
        .workers(workers)
        .io(Config::new()
            .recv_buffers(count, size)
            .recv_buffers_max(max))
        .build()
        .unwrap()
}

/// Buffers out of the kernel's hands, over every worker's pool.
fn pool_out(rt: &Runtime) -> usize {
    let driver = rt.inner().io().unwrap();
    driver
        .shared()
        .rings()
        .iter()
        .map(|r| r.pool().expect("this ring has a pool").out())
        .sum()
}

/// Waits (≤ 2 s) until `f` holds.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..2000 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    f()
}

#[test]
fn a_pooled_recv_lends_a_pool_buffer_until_it_is_dropped() {
    let rt = rt_pool(1, 4, 256);
    let (a, mut b) = tcp_pair();
    let a = Arc::new(a);
    b.write_all(b"hello").unwrap();
    let a2 = a.clone();
    let buf = rt.block_on(async move { recv_pooled(&*a2).await.unwrap() });
    assert!(buf.is_pooled());
    assert_eq!(&buf[..], b"hello");
    assert_eq!(pool_out(&rt), 1);
    drop(buf);
    assert_eq!(pool_out(&rt), 0);
    // A receive waits holding no buffer, and more bytes than a buffer holds come
    // in buffer-sized pieces.
    let waiting = rt
        .spawn(
            async move {
                let mut got = Vec::new();
                while got.len() < 600 {
                    let buf = recv_pooled(&*a).await.unwrap();
                    assert!(buf.len() <= 256 && !buf.is_empty());
                    got.extend_from_slice(&buf);
                }
                got
            },
            prio(1),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(pool_out(&rt), 0, "a waiting receive holds a buffer");
    let sent: Vec<u8> = (0..600u32).map(|i| i as u8).collect();
    b.write_all(&sent).unwrap();
    assert_eq!(rt.block_on(waiting).unwrap(), sent);
    assert_eq!(pool_out(&rt), 0);
}

#[test]
fn an_exhausted_pool_falls_back_to_buffers_of_their_own() {
    let rt = rt_pool(1, 2, 64);
    let pairs: Arc<Vec<_>> = Arc::new((0..4).map(|_| tcp_pair()).collect());
    for (i, (_, b)) in pairs.iter().enumerate() {
        let mut b = b;
        b.write_all(format!("msg{i}").as_bytes()).unwrap();
    }
    let p2 = pairs.clone();
    let held = rt.block_on(async move {
        let mut held = Vec::new();
        for (a, _) in p2.iter() {
            held.push(recv_pooled(a).await.unwrap());
        }
        held
    });
    let texts: Vec<&[u8]> = held.iter().map(|b| &b[..]).collect();
    assert_eq!(texts, [&b"msg0"[..], b"msg1", b"msg2", b"msg3"]);
    let pooled: Vec<bool> = held.iter().map(|b| b.is_pooled()).collect();
    assert_eq!(pooled, [true, true, false, false]);
    assert_eq!(pool_out(&rt), 2);
    drop(held);
    assert_eq!(pool_out(&rt), 0);
    // The buffers came back: the pool lends again.
    (&pairs[0].1).write_all(b"again").unwrap();
    let buf = rt.block_on(async move { recv_pooled(&pairs[0].0).await.unwrap() });
    assert!(buf.is_pooled());
    assert_eq!(&buf[..], b"again");
}

#[test]
fn a_dry_pool_doubles_while_half_its_buffers_are_lent_up_to_its_ceiling() {
    let rt = rt_growing_pool(1, 2, 8, 64);
    let pairs: Arc<Vec<_>> = Arc::new((0..12).map(|_| tcp_pair()).collect());
    for (i, (_, b)) in pairs.iter().enumerate() {
        let mut b = b;
        b.write_all(format!("msg{i}").as_bytes()).unwrap();
    }
    let p2 = pairs.clone();
    // Each receive's bytes are waiting: the pool hands out its buffers in
    // turn; the receive that meets it dry gets a buffer of its own and
    // doubles it (2 → 4 → 8), and at the ceiling it stays.
    let (held, counts) = rt.block_on(async move {
        let mut held = Vec::new();
        let mut counts = Vec::new();
        for (a, _) in p2.iter() {
            held.push(recv_pooled(a).await.unwrap());
            let ring = driver::current_local().unwrap().ring().clone();
            counts.push(ring.pool().unwrap().count());
        }
        (held, counts)
    });
    let texts: Vec<String> = held
        .iter()
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
        .collect();
    let want: Vec<String> = (0..12).map(|i| format!("msg{i}")).collect();
    assert_eq!(texts, want, "a byte lost or out of order");
    let pooled: Vec<bool> = held.iter().map(|b| b.is_pooled()).collect();
    assert_eq!(
        pooled,
        [true, true, false, true, true, false, true, true, true, true, false, false]
    );
    assert_eq!(counts, [2, 2, 4, 4, 4, 8, 8, 8, 8, 8, 8, 8]);
    let pool = rt.inner().io().unwrap().shared().rings()[0]
        .pool()
        .unwrap()
        .clone();
    assert_eq!(pool.dry(), 4);
    assert_eq!(pool.out(), 8);
    drop(held);
    assert_eq!(pool.out(), 0);
    // Every buffer came back, the grown ones too: eight lent at once again.
    for (_, b) in pairs.iter().take(8) {
        let mut b = b;
        b.write_all(b"again").unwrap();
    }
    let p3 = pairs.clone();
    let again = rt.block_on(async move {
        let mut held = Vec::new();
        for (a, _) in p3.iter().take(8) {
            held.push(recv_pooled(a).await.unwrap());
        }
        held
    });
    assert!(again.iter().all(|b| b.is_pooled() && &b[..] == b"again"));
    assert_eq!((pool.count(), pool.dry()), (8, 4));
    // What the runtime tells its user.
    let m = rt.io_metrics().unwrap();
    assert_eq!(
        (m.recv_buffers, m.recv_buffers_lent, m.recv_pool_dry),
        (8, 8, 4)
    );
    assert!(m.completions >= 20 && m.submitted >= 20, "{m:?}");
    drop(again);
    assert_eq!(rt.io_metrics().unwrap().recv_buffers_lent, 0);
}

#[test]
fn a_pool_dry_only_for_a_moment_does_not_grow() {
    let rt = rt_growing_pool(1, 4, 64, 64);
    let (a, mut b) = tcp_pair();
    let a = Arc::new(a);
    let ring_pool = || {
        rt.inner().io().unwrap().shared().rings()[0]
            .pool()
            .unwrap()
            .clone()
    };
    // Thousands of receives, each buffer given back at once: the pool never
    // runs dry and stays at its starting size.
    for round in 0..200u32 {
        let msg = format!("round {round}");
        b.write_all(msg.as_bytes()).unwrap();
        let a2 = a.clone();
        let buf = rt.block_on(async move { recv_pooled(&*a2).await.unwrap() });
        assert_eq!(&buf[..], msg.as_bytes());
    }
    let pool = ring_pool();
    assert_eq!((pool.count(), pool.dry(), pool.out()), (4, 0, 0));
    // A dry report while most buffers are back (the episode is over) leaves
    // it as it is; with half of them lent it doubles.
    pool.ran_dry();
    assert_eq!((pool.count(), pool.dry()), (4, 1));
    let a2 = a.clone();
    let held = rt.block_on(async move {
        let mut held = Vec::new();
        for i in 0..2u8 {
            b.write_all(&[i]).unwrap();
            held.push(recv_pooled(&*a2).await.unwrap());
        }
        held
    });
    assert_eq!(pool.out(), 2);
    pool.ran_dry();
    assert_eq!((pool.count(), pool.dry()), (8, 2));
    drop(held);
    assert_eq!(pool.out(), 0);
}

#[test]
fn buffers_given_back_on_other_threads_are_lent_again() {
    let rt = rt_pool(2, 4, 64);
    let (a, mut b) = tcp_pair();
    let a = Arc::new(a);
    for round in 0..40u32 {
        let msg = format!("round {round}");
        b.write_all(msg.as_bytes()).unwrap();
        let a2 = a.clone();
        let buf = rt.block_on(async move { recv_pooled(&*a2).await.unwrap() });
        assert!(buf.is_pooled(), "round {round}: the pool ran dry");
        assert_eq!(&buf[..], msg.as_bytes());
        // Dropped on a thread that is not a worker.
        std::thread::spawn(move || drop(buf)).join().unwrap();
    }
    assert_eq!(pool_out(&rt), 0);
}

#[test]
fn cancelled_pooled_recvs_lose_no_buffer_and_no_bytes_after_them() {
    let rt = rt_pool(1, 4, 64);
    let (a, mut b) = tcp_pair();
    let a = Arc::new(a);
    // Cancelled while waiting: it held no buffer, and the socket stays usable.
    let a2 = a.clone();
    let waiter = rt
        .spawn(async move { drop(recv_pooled(&*a2).await) }, prio(3))
        .unwrap();
    assert!(eventually(|| rt
        .executor()
        .blocked()
        .contains(&waiter.cid())));
    rt.executor().cancel(waiter.cid()).unwrap();
    assert!(eventually(|| rt.inner().io().unwrap().in_kernel() == 0));
    assert_eq!(pool_out(&rt), 0);
    // Completed (a buffer handed out) but dropped before anyone took it: the
    // buffer goes back.
    let a3 = a.clone();
    rt.block_on(async move {
        let mut op = Op::new(pool::RecvPooled::new(a3.as_raw_fd()));
        start(&mut op).await;
        b.write_all(b"lost").unwrap();
        let ring = settle_local("no completion");
        assert_eq!(
            ring.pool().unwrap().out(),
            1,
            "the completion took a buffer"
        );
        drop(op);
        assert_eq!(
            ring.pool().unwrap().out(),
            0,
            "the dropped result kept its buffer"
        );
        b.write_all(b"kept").unwrap();
        let buf = recv_pooled(&*a3).await.unwrap();
        assert_eq!(&buf[..], b"kept");
    });
    assert_eq!(pool_out(&rt), 0);
}

#[test]
fn pooled_recv_sees_the_end_of_file_and_errors() {
    let rt = rt_pool(1, 4, 64);
    let (a, b) = tcp_pair();
    drop(b);
    let buf = rt.block_on(async move { recv_pooled(&a).await.unwrap() });
    assert!(buf.is_empty());
    assert_eq!(pool_out(&rt), 0);
    let (rx, _tx) = pipe();
    // A pipe is no socket: ENOTSOCK, no buffer taken.
    let e = rt.block_on(async move { recv_pooled(&rx).await.unwrap_err() });
    assert_eq!(e.raw_os_error(), Some(libc::ENOTSOCK));
    assert_eq!(pool_out(&rt), 0);
}

#[test]
fn without_a_pool_pooled_recvs_and_streams_use_buffers_of_their_own() {
    let rt = Runtime::builder()
        .workers(1)
        .io(Config::new().recv_buffers(0, 0))
        .build()
        .unwrap();
    let (a, mut b) = tcp_pair();
    b.write_all(b"plain").unwrap();
    let buf = rt.block_on(async move {
        let once = recv_pooled(&a).await.unwrap();
        b.write_all(b"stream").unwrap();
        let streamed = RecvStream::new(&a).next().await.unwrap();
        assert!(!streamed.is_pooled());
        assert_eq!(&streamed[..], b"stream");
        once
    });
    assert!(!buf.is_pooled());
    assert_eq!(&buf[..], b"plain");
}

#[test]
fn a_bad_pool_shape_is_a_clear_build_error() {
    for (count, max, size) in [
        (3, 0, 4096),
        (1 << 15 | 1, 0, 4096),
        (4, 0, 0),
        (4, 0, pool::MAX_BUFFER_SIZE + 1),
        (4, 12, 4096),
        (4, 1 << 15 | 1, 4096),
    ] {
        let e = Runtime::builder()
            .workers(1)
            .io(Config::new()
                .recv_buffers(count, size)
                .recv_buffers_max(max))
            .build()
            .unwrap_err();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::InvalidInput,
            "{count} × {size} up to {max}"
        );
        assert!(e.to_string().contains("recv_buffers"), "{e}");
    }
    // A ceiling at or below the starting count: a pool that does not grow.
    let rt = rt_growing_pool(1, 8, 4, 64);
    rt.block_on(async {}); // the worker has started (and made its ring)
    let pool = rt.inner().io().unwrap().shared().rings()[0]
        .pool()
        .unwrap()
        .clone();
    assert_eq!(pool.count(), 8);
    pool.ran_dry();
    assert_eq!(pool.count(), 8);
}

// ---- multishot receives (`multishot`) ----

/// The driver's counters (summed over the rings).
fn stats(rt: &Runtime) -> Arc<driver::Shared> {
    rt.inner().io().unwrap().shared().clone()
}

/// Reads from `stream` until `n` bytes came (or the end of file).
async fn next_bytes(stream: &mut RecvStream, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        let buf = stream.next().await.unwrap();
        if buf.is_empty() {
            break;
        }
        got.extend_from_slice(&buf);
    }
    got
}

#[test]
fn a_recv_stream_is_armed_once_for_many_messages_then_sees_the_end() {
    let rt = rt_pool(1, 8, 256);
    let shared = stats(&rt);
    let (a, mut b) = tcp_pair();
    let echo = rt
        .spawn(
            async move {
                let mut stream = RecvStream::new(&a);
                let mut texts = Vec::new();
                loop {
                    let buf = stream.next().await.unwrap();
                    if buf.is_empty() {
                        break;
                    }
                    assert!(buf.is_pooled(), "a pool buffer was free");
                    texts.extend_from_slice(&buf);
                    // Tell the peer to send the next one.
                    crate::io::send(&a, vec![b'.']).await.0.unwrap();
                }
                texts
            },
            prio(2),
        )
        .unwrap();
    let mut sent = Vec::new();
    for i in 0..50 {
        let msg = format!("message {i};");
        b.write_all(msg.as_bytes()).unwrap();
        sent.extend_from_slice(msg.as_bytes());
        let mut ack = [0u8; 1];
        b.read_exact(&mut ack).unwrap();
    }
    b.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(rt.block_on(echo).unwrap(), sent);
    // One SQE for fifty messages (the end of file ends the stream).
    assert_eq!(shared.stats.streams.load(Ordering::Relaxed), 1);
    assert_eq!(shared.stats.throttled.load(Ordering::Relaxed), 0);
    // No worker in reserve, so it never had to follow its reader.
    assert_eq!(shared.stats.followed.load(Ordering::Relaxed), 0);
    assert_eq!(pool_out(&rt), 0);
    assert_eq!(rt.inner().io().unwrap().in_kernel(), 0);
}

#[test]
fn a_reader_that_falls_behind_has_its_stream_stopped_and_loses_no_byte() {
    // Buffers of 16 bytes: 4 000 bytes are 250 completions, far beyond the cap.
    let rt = rt_pool(1, 64, 16);
    let shared = stats(&rt);
    let (a, mut b) = tcp_pair();
    let armed = Arc::new(AtomicUsize::new(0));
    let armed2 = armed.clone();
    let reader = rt
        .spawn(
            async move {
                let mut stream = RecvStream::new(&a);
                let mut got = next_bytes(&mut stream, 1).await;
                armed2.store(1, Ordering::SeqCst);
                // Behind: the bytes keep coming while this one sleeps.
                crate::time::sleep(Duration::from_millis(200)).await;
                got.extend(next_bytes(&mut stream, 4001 - got.len()).await);
                got
            },
            prio(2),
        )
        .unwrap();
    b.write_all(b"x").unwrap();
    hold_worker_until(&armed, 1);
    let sent: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    for chunk in sent.chunks(100) {
        b.write_all(chunk).unwrap();
    }
    let got = rt.block_on(reader).unwrap();
    assert_eq!(got[0], b'x');
    assert_eq!(&got[1..], &sent[..]);
    assert!(shared.stats.throttled.load(Ordering::Relaxed) >= 1);
    assert!(
        shared.stats.streams.load(Ordering::Relaxed) >= 2,
        "not re-armed after the stop"
    );
    assert!(eventually(|| pool_out(&rt) == 0));
}

#[test]
fn a_stream_on_a_worker_in_reserve_follows_its_reader_and_loses_no_byte() {
    let rt = rt_pool(2, 64, 64);
    let shared = stats(&rt);
    assert!(eventually(|| shared.rings().len() == 2));
    // Every ring's owner said to be in reserve: each time the reader finds
    // nothing queued it stops its stream and arms the next on the ring of the
    // worker polling it (the owners' own threads: cancelled locally or, from
    // the other worker, through the remote queue).
    for ring in shared.rings() {
        ring.set_owner_reserved(true);
    }
    let (a, mut b) = tcp_pair();
    let sent: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
    let n = sent.len();
    let reader = rt
        .spawn(
            async move {
                let mut stream = RecvStream::new(&a);
                next_bytes(&mut stream, n).await
            },
            prio(2),
        )
        .unwrap();
    let sent2 = sent.clone();
    let writer = std::thread::spawn(move || {
        for (i, chunk) in sent2.chunks(500).enumerate() {
            b.write_all(chunk).unwrap();
            if i % 4 == 0 {
                // The reader catches up and waits on an empty queue.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        b
    });
    let got = rt.block_on(reader).unwrap();
    let _b = writer.join().unwrap();
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "bytes lost or reordered across a stop");
    let followed = shared.stats.followed.load(Ordering::Relaxed);
    assert!(followed >= 1, "never followed its reader");
    assert!(
        shared.stats.streams.load(Ordering::Relaxed) > followed,
        "not armed again after each stop"
    );
    for ring in shared.rings() {
        ring.set_owner_reserved(false);
    }
    assert!(eventually(|| rt.inner().io().unwrap().in_kernel() == 0));
    assert!(eventually(|| pool_out(&rt) == 0), "a buffer was lost");
}

#[test]
fn a_dropped_stream_gives_back_its_buffers_on_any_thread() {
    let rt = rt_pool(2, 16, 64);
    let (a, mut b) = tcp_pair();
    let a = Arc::new(a);
    for dropped_here in [true, false] {
        let a2 = a.clone();
        b.write_all(&[7u8; 64]).unwrap(); // the first receive's bytes
        let stream = rt.block_on(async move {
            let mut stream = RecvStream::new(&*a2);
            drop(stream.next().await.unwrap());
            stream
        });
        // Armed, with completions queued that nobody takes.
        b.write_all(&[9u8; 200]).unwrap();
        assert!(eventually(|| pool_out(&rt) >= 1), "nothing queued");
        if dropped_here {
            drop(stream); // not a worker: through the owner's remote queue
        } else {
            rt.block_on(async move { drop(stream) });
        }
        assert!(eventually(|| rt.inner().io().unwrap().in_kernel() == 0));
        assert!(eventually(|| pool_out(&rt) == 0), "a buffer was lost");
        // The socket is still usable; drain what the stream had not taken.
        let mut c = &*a;
        c.set_nonblocking(true).unwrap();
        let mut junk = [0u8; 512];
        while c.read(&mut junk).is_ok_and(|n| n > 0) {}
        c.set_nonblocking(false).unwrap();
    }
    b.write_all(b"after").unwrap();
    let buf = rt.block_on(async move { recv_pooled(&*a).await.unwrap() });
    assert_eq!(&buf[..], b"after");
}

#[test]
fn completions_posted_before_a_stream_is_dropped_give_their_buffers_back() {
    let rt = rt_pool(1, 16, 64);
    let (a, mut b) = tcp_pair();
    b.write_all(b"first").unwrap();
    rt.block_on(async move {
        let mut stream = RecvStream::new(&a);
        assert_eq!(&stream.next().await.unwrap()[..], b"first");
        // Posted by the kernel, not yet reaped, when the stream goes: they
        // reach an abandoned slot.
        b.write_all(&[5u8; 300]).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while driver::post_without_reaping_local() == 0 {
            assert!(std::time::Instant::now() < deadline, "nothing posted");
            std::thread::yield_now();
        }
        drop(stream);
        let ring = settle_local("never cancelled");
        assert_eq!(ring.pool().unwrap().out(), 0, "a buffer was lost");
    });
}

#[test]
fn a_recv_stream_reports_errors_and_arms_again() {
    let rt = rt_pool(1, 4, 64);
    let (rx, _tx) = pipe();
    rt.block_on(async move {
        let mut stream = RecvStream::new(&rx);
        // A pipe is no socket: ENOTSOCK, twice (the second call arms again).
        for _ in 0..2 {
            let e = stream.next().await.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOTSOCK));
        }
    });
    assert_eq!(pool_out(&rt), 0);
    assert_eq!(stats(&rt).stats.streams.load(Ordering::Relaxed), 2);
}

#[test]
fn a_stream_finding_the_pool_empty_receives_into_a_buffer_of_its_own() {
    // A pool whose buffers are all held: the stream ends with ENOBUFS and its
    // reader gets the bytes in a buffer of its own.
    let rt = rt_pool(1, 2, 64);
    let (a, mut b) = tcp_pair();
    let (c, mut d) = tcp_pair();
    b.write_all(&[1u8; 128]).unwrap();
    let held = rt.block_on(async move {
        let mut stream = RecvStream::new(&a);
        let held = (stream.next().await.unwrap(), stream.next().await.unwrap());
        (held, stream)
    });
    assert!(held.0 .0.is_pooled() && held.0 .1.is_pooled());
    d.write_all(b"no room").unwrap();
    let buf = rt.block_on(async move { RecvStream::new(&c).next().await.unwrap() });
    assert!(!buf.is_pooled());
    assert_eq!(&buf[..], b"no room");
    drop(held);
    assert!(eventually(|| pool_out(&rt) == 0));
}

#[test]
fn a_stream_grows_a_dry_pool_and_loses_no_byte() {
    // The reader keeps every buffer it gets: the pool (2 growing to 16) runs
    // dry again and again; it doubles to its ceiling, then the stream's
    // receives go into buffers of their own, every byte in order.
    let rt = rt_growing_pool(1, 2, 16, 64);
    let (a, b) = tcp_pair();
    let sent: Vec<u8> = (0..40 * 64u32).map(|i| (i % 251) as u8).collect();
    let s2 = sent.clone();
    let writer = std::thread::spawn(move || {
        let mut b = b;
        for chunk in s2.chunks(64) {
            b.write_all(chunk).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        b
    });
    let held = rt.block_on(async move {
        let mut stream = RecvStream::new(&a);
        let mut held = Vec::new();
        let mut got = 0;
        while got < 40 * 64 {
            let buf = stream.next().await.unwrap();
            assert!(!buf.is_empty());
            got += buf.len();
            held.push(buf);
        }
        held
    });
    let _b = writer.join().unwrap();
    let got: Vec<u8> = held.iter().flat_map(|b| b.iter().copied()).collect();
    assert_eq!(got, sent, "a byte lost or out of order");
    let pool = rt.inner().io().unwrap().shared().rings()[0]
        .pool()
        .unwrap()
        .clone();
    assert_eq!(pool.count(), 16);
    assert!(pool.dry() >= 4, "{} dry receives", pool.dry());
    assert_eq!(held.iter().filter(|b| b.is_pooled()).count(), 16);
    let m = rt.io_metrics().unwrap();
    assert!(m.streams >= 2, "re-armed after a dry stop: {m:?}");
    assert_eq!((m.recv_buffers, m.recv_pool_dry), (16, pool.dry()));
    drop(held);
    assert!(eventually(|| pool_out(&rt) == 0));
}

#[test]
fn shutdown_with_streams_armed_leaks_nothing() {
    let rt = rt_pool(2, 8, 64);
    let inner = rt.inner().clone();
    let pairs: Vec<_> = (0..6).map(|_| tcp_pair()).collect();
    let mut peers = Vec::new();
    for (a, b) in pairs {
        peers.push(b);
        rt.spawn(
            async move {
                let mut stream = RecvStream::new(&a);
                while !stream.next().await.unwrap().is_empty() {}
            },
            prio(4),
        )
        .unwrap();
    }
    assert!(eventually(|| inner.io().unwrap().in_kernel() == 6));
    // Some with completions queued, some waiting.
    for b in &mut peers[..3] {
        b.write_all(b"pending").unwrap();
    }
    rt.shutdown();
    let driver = inner.io().unwrap();
    assert!(driver.rings_closed());
    assert_eq!(driver.in_kernel(), 0);
}

/// A pipe read that records the results handed to it after its future was
/// dropped (`Operation::release`).
struct Released {
    fd: std::os::fd::RawFd,
    buf: Vec<u8>,
    got: Arc<std::sync::Mutex<Vec<i32>>>,
}

impl Operation for Released {
    type Output = i32;

    fn sqe(&mut self) -> io_uring::squeue::Entry {
        io_uring::opcode::Read::new(
            io_uring::types::Fd(self.fd),
            self.buf.as_mut_ptr(),
            self.buf.len() as u32,
        )
        .build()
    }

    fn complete(self, result: i32) -> i32 {
        result
    }

    fn fail(self, _: std::io::Error) -> i32 {
        i32::MIN
    }

    fn release(self, result: i32) {
        self.got.lock().unwrap().push(result);
    }
}

#[test]
fn a_result_nobody_takes_is_released_to_its_operation() {
    let rt = rt(1);
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    rt.block_on(async move {
        let (r, w) = pipe();
        (&std::fs::File::from(w)).write_all(b"0123456789").unwrap();
        let read = |n| Released {
            fd: r.as_raw_fd(),
            buf: vec![0; n],
            got: g.clone(),
        };
        let waiter = || driver::Waiter::Waker(futures_util::task::noop_waker());
        let settle = || settle_local("no completion");
        // Completed and reaped (the slot holds the result), then dropped.
        let op = Op::submit_now(read(4), waiter()).unwrap();
        settle();
        drop(op);
        assert_eq!(*g.lock().unwrap(), [4]);
        // Dropped while the driver has not reaped it yet: it is abandoned
        // (a cancellation asked, too late), and its completion, once reaped,
        // goes to `release` all the same.
        let op = Op::submit_now(read(3), waiter()).unwrap();
        drop(op);
        settle();
        // Taken by its future: nothing released.
        let op = Op::submit_now(read(2), waiter());
        let taken = op.unwrap().await;
        assert_eq!(taken, 2);
    });
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], 4);
    // The read either completed (3 bytes) or was cancelled in time.
    assert!(got[1] == 3 || got[1] == -libc::ECANCELED, "{got:?}");
}

#[test]
fn an_accept_dropped_after_its_completion_closes_the_connection() {
    let rt = rt(1);
    let listener = Arc::new(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    let l2 = listener.clone();
    let client = rt.block_on(async move {
        let mut fut = Box::pin(accept(&*l2));
        std::future::poll_fn(|cx| {
            assert!(std::future::Future::poll(fut.as_mut(), cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
        // The accept is with the kernel; a client connects.
        let client = std::net::TcpStream::connect(addr).unwrap();
        settle_local("no completion");
        // Completed (its slot holds the new descriptor), never taken.
        drop(fut);
        client
    });
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut byte = [0u8; 1];
    let r = loop {
        match (&client).read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r,
        }
    };
    assert!(
        matches!(r, Ok(0)),
        "the accepted connection was leaked (still open): read gave {r:?}"
    );
}

/// A receive that selects from a buffer group the ring does not have: the
/// kernel fails it with `ENOBUFS`, though the ring's pool played no part.
struct OtherGroup(std::os::fd::RawFd);

impl Operation for OtherGroup {
    type Output = i32;

    fn sqe(&mut self) -> io_uring::squeue::Entry {
        io_uring::opcode::Recv::new(io_uring::types::Fd(self.0), std::ptr::null_mut(), 64)
            .buf_group(0x7e57)
            .build()
            .flags(io_uring::squeue::Flags::BUFFER_SELECT)
    }

    fn complete(self, result: i32) -> i32 {
        result
    }

    fn fail(self, _: std::io::Error) -> i32 {
        i32::MIN
    }
}

#[test]
fn only_a_receive_from_the_pool_that_finds_it_dry_grows_it() {
    let rt = rt_growing_pool(1, 2, 8, 64);
    let pairs: Arc<Vec<_>> = Arc::new((0..4).map(|_| tcp_pair()).collect());
    for (_, b) in pairs.iter() {
        let mut b = b;
        b.write_all(b"bytes").unwrap();
    }
    let p2 = pairs.clone();
    let (held, other, counts) = rt.block_on(async move {
        // Both buffers lent: the pool is dry, and a receive of its own that
        // met it so would double it.
        let mut held = vec![
            recv_pooled(&p2[0].0).await.unwrap(),
            recv_pooled(&p2[1].0).await.unwrap(),
        ];
        let pool = driver::current_local()
            .unwrap()
            .ring()
            .pool()
            .unwrap()
            .clone();
        let before = (pool.count(), pool.dry());
        // An ENOBUFS that is not the pool's.
        let other = Op::new(OtherGroup(p2[2].0.as_raw_fd())).await;
        let after_other = (pool.count(), pool.dry());
        // One of the pool's: it grows.
        held.push(recv_pooled(&p2[3].0).await.unwrap());
        let after_own = (pool.count(), pool.dry());
        (held, other, [before, after_other, after_own])
    });
    assert_eq!(other, -libc::ENOBUFS);
    assert_eq!(counts, [(2, 0), (2, 0), (4, 1)], "(buffers, dry receives)");
    assert!(held.iter().all(|b| &b[..] == b"bytes"));
}

/// A foreign waker that owns a future: dropping the waker's last reference
/// drops the future (as an executor whose idle tasks only their wakers hold).
struct Owning {
    /// Never read: held, so that it drops with the waker's last reference.
    _held:
        std::sync::Mutex<Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>>,
}

impl std::task::Wake for Owning {
    fn wake(self: Arc<Self>) {}
}

/// Polls `fut` once with `waker`; it must be pending.
fn poll_pending<F: std::future::Future + ?Sized>(
    fut: std::pin::Pin<&mut F>,
    waker: &std::task::Waker,
) {
    let mut cx = std::task::Context::from_waker(waker);
    assert!(fut.poll(&mut cx).is_pending());
}

#[test]
fn a_waker_the_driver_lets_go_of_may_drop_an_operation_of_the_same_ring() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // On a thread of its own: the defect this guards against was a deadlock.
    std::thread::spawn(move || {
        let rt = rt(1);
        rt.block_on(async {
            let noop = futures_util::task::noop_waker();
            let (r1, _w1) = pipe();
            let (r2, _w2) = pipe();
            let (r3, w3) = pipe();
            for replaced_by in ["a re-poll", "a drop"] {
                // B: a read with the kernel, owned by the waker W.
                let mut b: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
                    Box::pin({
                        let r2 = r2.try_clone().unwrap();
                        async move {
                            let _ = read(r2, Vec::with_capacity(8)).await;
                        }
                    });
                poll_pending(b.as_mut(), &noop);
                let w = std::task::Waker::from(Arc::new(Owning {
                    _held: std::sync::Mutex::new(Some(b)),
                }));
                // A: a read with the kernel, whose slot holds W — the only
                // reference to it once `w` is gone.
                let mut a = Box::pin(read(r1.try_clone().unwrap(), Vec::with_capacity(8)));
                poll_pending(a.as_mut(), &w);
                drop(w);
                // The driver lets go of W (so drops B, which abandons its
                // read on this ring): replaced by another waker, or with A.
                match replaced_by {
                    "a re-poll" => poll_pending(a.as_mut(), &noop),
                    _ => drop(a),
                }
            }
            // The ring still serves.
            std::fs::File::from(w3).write_all(b"ok").unwrap();
            let (n, buf) = read(r3, Vec::with_capacity(8)).await;
            assert_eq!((n.unwrap(), &buf[..]), (2, &b"ok"[..]));
        });
        rt.shutdown();
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the driver deadlocked dropping a waker under its slot lock");
}

/// A `FUTEX_WAIT` armed for an earlier registration with the coordinator
/// waits on that page's futex key, which nobody wakes once the coordinator
/// has gone: a deferring worker must not keep it (it would never arm one on
/// the new page, and would wait out every recheck interval for good).
/// Stands in for the swap with two words (the same address after a real
/// `MAP_FIXED`; what tells them apart is the registration count).
#[test]
fn a_futex_wait_armed_for_an_earlier_registration_is_replaced() {
    use std::sync::atomic::AtomicU32;
    let words: &'static [AtomicU32; 2] =
        Box::leak(Box::new([AtomicU32::new(0), AtomicU32::new(0)]));
    let rt = rt(1);
    let elapsed = rt.block_on(async move {
        // SAFETY: the words are leaked: they outlive every wait.
        if !unsafe { driver::defer_local(&words[0], 0, 0, Duration::from_millis(1)) } {
            eprintln!("skipped: this kernel has no io_uring FUTEX_WAIT");
            return Duration::ZERO;
        }
        // The first registration's wait stays armed on word 0. Registered
        // again (count 1), the worker waits on word 1, which another thread
        // then changes and wakes.
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            words[1].store(1, Ordering::SeqCst);
            // SAFETY: a futex wake on a live word; shared, as the
            // coordinator's is.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    words[1].as_ptr(),
                    libc::FUTEX_WAKE,
                    i32::MAX,
                )
            };
        });
        let start = std::time::Instant::now();
        while words[1].load(Ordering::SeqCst) == 0 {
            // SAFETY: as above.
            unsafe { driver::defer_local(&words[1], 0, 1, Duration::from_secs(10)) };
        }
        let elapsed = start.elapsed();
        waker.join().unwrap();
        settle_local("the futex waits ended");
        elapsed
    });
    assert!(
        elapsed < Duration::from_secs(5),
        "the wake of the new page reached the worker only by its timeout ({elapsed:?})"
    );
}
