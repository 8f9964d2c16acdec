//! Networking: a virtio-net device (the `virtio-drivers` crate) and TCP (the
//! `smoltcp` crate), interrupt-driven, with smoltcp's clock running on the
//! `time` CSR (the original froze it).
//!
//! # Shape
//!
//! One [`Net`] under one lock: the device, the interface (10.0.2.15/24,
//! gateway 10.0.2.2 — QEMU's user networking) and the socket set. Three
//! parties poll the interface:
//!
//! - the **net coroutine** ([`net_task`], a kernel coroutine at the most
//!   important level), woken by the device's interrupt and by smoltcp's own
//!   timers (retransmission, `poll_delay`), on a tick;
//! - a **system call that queued bytes** (`send`), at once, so a reply leaves
//!   without waiting for a hop to another coroutine;
//! - a **read that reopened a receive window at least half full**, so the
//!   peer goes on at once instead of waiting for its persist timer.
//!
//! # Interrupts
//!
//! The PLIC routes the device's interrupt to the boot hart. The handler only
//! claims it, notes it and wakes the net coroutine; the coroutine
//! acknowledges the device and then completes the claim, so a level-triggered
//! line cannot storm while the coroutine is on its way.
//!
//! # Waiting
//!
//! Each connection and each listener has a [`SockWait`]: the threads blocked
//! on it (they re-issue their call when woken) and the kernel coroutines of
//! asynchronous calls. It is registered as smoltcp's receive and send waker of
//! its sockets whenever somebody waits, so smoltcp's own state changes (data,
//! window, FIN, RST, a connection established) wake exactly the waiters of
//! that socket — no scan of every socket after a poll.
//!
//! # Listening and accepting
//!
//! smoltcp accepts one connection per listening socket, so a listener keeps
//! [`LISTEN_SPARES`] sockets listening on its port; after every poll an
//! established one moves to the listener's ready queue (at most
//! `LISTEN_BACKLOG`) and a fresh one takes its place. With the queue full no
//! spare is added, and further connection attempts are reset.
//!
//! # Closing
//!
//! Dropping a connection's last descriptor closes the socket (FIN); the socket
//! is removed when it reaches `Closed` or `TimeWait`, or aborted (RST) if it
//! is still closing after [`LINGER_S`] seconds, so a peer that never finishes
//! costs nothing for long. A listener's close aborts its spares and the
//! connections nobody accepted.
//!
//! Everything read from the network is input from outside: smoltcp parses it;
//! this module only moves bytes between sockets and checked user buffers.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::cell::RefCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use core::task::{Poll, Waker};

use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};
use ss_abi::syscall::{SysError, LISTEN_BACKLOG};
use virtio_drivers::device::net::{RxBuffer, VirtIONet};
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

use crate::arch;
use crate::fd::{wake_all, Waiters};
use crate::sync::IrqMutex;

/// The guest's address (QEMU user networking's default for the guest).
pub const GUEST_IP: [u8; 4] = [10, 0, 2, 15];
const GATEWAY: [u8; 4] = [10, 0, 2, 2];
/// QEMU virt's virtio-mmio slots: base of the first, size of each, how many;
/// slot `i` interrupts on PLIC source `1 + i`.
const MMIO_BASE: usize = 0x1000_1000;
const MMIO_SIZE: usize = 0x1000;
const MMIO_SLOTS: usize = 8;
/// Descriptors per virtqueue, and bytes per receive buffer (a full frame).
const QUEUE: usize = 64;
const RX_BUF: usize = 2048;
/// Bytes of each socket's receive and of its send buffer (a paper request,
/// 15×15, is 916 bytes; a 64×64 one passes in several windows).
pub const SOCKET_BUFFER: usize = 4096;
/// Sockets a listener keeps listening: a burst of this many connection
/// attempts between two polls is taken (one full receive queue of SYNs);
/// an attempt with no socket listening is reset.
pub const LISTEN_SPARES: usize = QUEUE;
/// Seconds a closed connection may take to finish before it is reset.
pub const LINGER_S: u64 = 10;

type Nic = VirtIONet<KernelHal, MmioTransport<'static>, QUEUE>;

/// Packets received and sent, interrupts taken, polls made (for tests and
/// the shell's view).
pub static RX_PACKETS: AtomicU64 = AtomicU64::new(0);
/// See [`RX_PACKETS`].
pub static TX_PACKETS: AtomicU64 = AtomicU64::new(0);
/// See [`RX_PACKETS`].
pub static IRQS: AtomicU64 = AtomicU64::new(0);
/// See [`RX_PACKETS`].
pub static POLLS: AtomicU64 = AtomicU64::new(0);
/// Sockets in the set (listening spares, connections, closing ones).
pub static SOCKETS: AtomicUsize = AtomicUsize::new(0);

/// DMA for virtio-drivers: the kernel's heap, which is identity-mapped, so a
/// buffer's address is its physical address.
struct KernelHal;

// SAFETY: `dma_alloc` returns zeroed, page-aligned, physically contiguous
// memory (one heap block of an identity-mapped heap) that stays allocated
// until `dma_dealloc`; `share` gives the physical address of a kernel buffer,
// which is its own address under the identity map; MMIO is identity-mapped.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let layout = Layout::from_size_align(pages * 4096, 4096).unwrap_or(Layout::new::<u8>());
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
        match NonNull::new(p) {
            Some(p) => (p.as_ptr() as PhysAddr, p),
            // Only at boot, for the queues: no device without memory for them.
            None => alloc::alloc::handle_alloc_error(layout),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let layout = Layout::from_size_align(pages * 4096, 4096).unwrap_or(Layout::new::<u8>());
        // SAFETY: `vaddr` came from `dma_alloc` with the same layout.
        unsafe { alloc::alloc::dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as usize as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr().cast::<u8>() as usize as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// The device as smoltcp sees it.
struct Device(RefCell<Nic>);

struct Rx<'a> {
    nic: &'a RefCell<Nic>,
    buf: Option<RxBuffer>,
}

struct Tx<'a>(&'a RefCell<Nic>);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(mut self, f: F) -> R {
        let buf = self.buf.take();
        let r = f(buf.as_ref().map_or(&[][..], RxBuffer::packet));
        if let Some(b) = buf {
            let _ = self.nic.borrow_mut().recycle_rx_buffer(b);
        }
        r
    }
}

impl Drop for Rx<'_> {
    fn drop(&mut self) {
        // A token smoltcp did not consume still gives its buffer back.
        if let Some(b) = self.buf.take() {
            let _ = self.nic.borrow_mut().recycle_rx_buffer(b);
        }
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut nic = self.0.borrow_mut();
        let mut tx = nic.new_tx_buffer(len);
        let r = f(tx.packet_mut());
        if nic.send(tx).is_ok() {
            TX_PACKETS.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl phy::Device for Device {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let buf = {
            let mut nic = self.0.borrow_mut();
            if !nic.can_recv() {
                return None;
            }
            nic.receive().ok()?
        };
        RX_PACKETS.fetch_add(1, Ordering::Relaxed);
        Some((
            Rx {
                nic: &self.0,
                buf: Some(buf),
            },
            Tx(&self.0),
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        self.0.borrow().can_send().then_some(Tx(&self.0))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

/// Who waits on a socket or a listener; smoltcp's waker for its sockets.
pub struct SockWait {
    waiters: IrqMutex<Waiters>,
}

impl Default for SockWait {
    fn default() -> Self {
        SockWait {
            waiters: IrqMutex::new(Waiters::new()),
        }
    }
}

impl Wake for SockWait {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let list = core::mem::take(&mut *self.waiters.lock());
        wake_all(list);
    }
}

/// A listener's state in [`Net`].
struct Listen {
    spares: Vec<SocketHandle>,
    ready: VecDeque<SocketHandle>,
    wait: Arc<SockWait>,
}

/// Everything networking, under one lock.
struct Net {
    dev: Device,
    iface: Interface,
    sockets: SocketSet<'static>,
    listeners: BTreeMap<u16, Listen>,
    /// Closed connections finishing, with the `time` they were closed.
    closing: Vec<(SocketHandle, u64)>,
}

// SAFETY: the device's MMIO pointers and the RefCell are only used under the
// `NET` lock, by one hart at a time.
unsafe impl Send for Net {}

static NET: spin::Once<IrqMutex<Net>> = spin::Once::new();
/// The device's PLIC source (0: none).
static IRQ: AtomicUsize = AtomicUsize::new(0);
/// The PLIC context that claimed the device's interrupt and must complete it
/// (`usize::MAX`: none outstanding).
static CLAIMED: AtomicUsize = AtomicUsize::new(usize::MAX);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static TASK_WAKER: IrqMutex<Option<Waker>> = IrqMutex::new(None);

fn now() -> Instant {
    Instant::from_micros((arch::time() / (arch::TIME_HZ / 1_000_000)) as i64)
}

fn net() -> Result<&'static IrqMutex<Net>, SysError> {
    NET.get().ok_or(SysError::NoDevice)
}

/// Whether a network device was found at boot.
pub fn present() -> bool {
    NET.get().is_some()
}

/// Finds a virtio-net device and brings the interface up. Boot hart, once,
/// before `spawn_task`. Without a device networking calls fail with
/// `NoDevice`.
pub fn init() -> bool {
    for slot in 0..MMIO_SLOTS {
        let base = MMIO_BASE + slot * MMIO_SIZE;
        let Some(header) = NonNull::new(base as *mut VirtIOHeader) else {
            continue;
        };
        // SAFETY: QEMU virt has a virtio-mmio region of MMIO_SIZE bytes at
        // each slot, identity-mapped for the kernel, for the kernel's life;
        // nothing else drives it.
        let Ok(transport) = (unsafe { MmioTransport::new(header, MMIO_SIZE) }) else {
            continue;
        };
        if transport.device_type() != DeviceType::Network {
            continue;
        }
        let Ok(nic) = Nic::new(transport, RX_BUF) else {
            crate::println!("[kernel] virtio-net in slot {slot} would not start");
            continue;
        };
        let mac = nic.mac_address();
        let mut dev = Device(RefCell::new(nic));
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ethernet(EthernetAddress(mac))),
            &mut dev,
            now(),
        );
        let [a, b, c, d] = GUEST_IP;
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(Ipv4Address::new(a, b, c, d).into(), 24));
        });
        let [a, b, c, d] = GATEWAY;
        let _ = iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Address::new(a, b, c, d));
        NET.call_once(|| {
            IrqMutex::new(Net {
                dev,
                iface,
                sockets: SocketSet::new(Vec::new()),
                listeners: BTreeMap::new(),
                closing: Vec::new(),
            })
        });
        IRQ.store(1 + slot, Ordering::SeqCst);
        crate::println!(
            "[kernel] virtio-net in slot {slot}, irq {}, mac {}, address {a}.{b}.{c}.{d}",
            1 + slot,
            EthernetAddress(mac),
            a = GUEST_IP[0],
            b = GUEST_IP[1],
            c = GUEST_IP[2],
            d = GUEST_IP[3],
        );
        return true;
    }
    false
}

/// The device's PLIC source, if there is a device.
pub fn irq() -> Option<usize> {
    match IRQ.load(Ordering::SeqCst) {
        0 => None,
        n => Some(n),
    }
}

/// The device's interrupt, claimed by PLIC context `ctx`: note it and wake the
/// net coroutine, which completes the claim after acknowledging the device.
pub fn interrupt(ctx: usize) {
    IRQS.fetch_add(1, Ordering::Relaxed);
    CLAIMED.store(ctx, Ordering::SeqCst);
    INTERRUPTED.store(true, Ordering::SeqCst);
    if let Some(w) = TASK_WAKER.lock().take() {
        w.wake();
    }
}

impl Net {
    /// One poll of the interface, then the listeners' and closing sockets'
    /// bookkeeping.
    fn poll(&mut self) {
        POLLS.fetch_add(1, Ordering::Relaxed);
        let t = now();
        let changed = self.iface.poll(t, &mut self.dev, &mut self.sockets);
        if changed == PollResult::SocketStateChanged {
            self.tend_listeners();
        }
        if !self.closing.is_empty() {
            self.reap();
        }
    }

    fn new_socket(&mut self) -> SocketHandle {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
        );
        // Requests and replies are small and latency matters: no Nagle, no
        // delayed ACK (the paper's server answers at once).
        s.set_nagle_enabled(false);
        s.set_ack_delay(None);
        SOCKETS.fetch_add(1, Ordering::Relaxed);
        self.sockets.add(s)
    }

    fn remove(&mut self, h: SocketHandle) {
        SOCKETS.fetch_sub(1, Ordering::Relaxed);
        self.sockets.remove(h);
    }

    fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    /// Moves established connections to their listener's ready queue and keeps
    /// `LISTEN_SPARES` sockets listening while the queue has room.
    fn tend_listeners(&mut self) {
        let mut listeners = core::mem::take(&mut self.listeners);
        for (&port, l) in &mut listeners {
            // Sockets that listen anew have no waker yet.
            let mut fresh = false;
            let mut i = 0;
            while i < l.spares.len() {
                let h = l.spares[i];
                match self.tcp(h).state() {
                    tcp::State::Listen | tcp::State::SynReceived => i += 1,
                    tcp::State::Closed => {
                        // A handshake that failed: listen again.
                        if self.tcp(h).listen(port).is_err() {
                            l.spares.swap_remove(i);
                            self.remove(h);
                        } else {
                            fresh = true;
                            i += 1;
                        }
                    }
                    _ => {
                        l.spares.swap_remove(i);
                        if l.ready.len() < LISTEN_BACKLOG {
                            l.ready.push_back(h);
                        } else {
                            self.tcp(h).abort();
                            self.closing.push((h, arch::time()));
                        }
                    }
                }
            }
            while l.spares.len() < LISTEN_SPARES && l.ready.len() + l.spares.len() < LISTEN_BACKLOG
            {
                let h = self.new_socket();
                if self.tcp(h).listen(port).is_err() {
                    self.remove(h);
                    break;
                }
                l.spares.push(h);
                fresh = true;
            }
            // A socket whose waker fired woke the waiters, who re-arm all in
            // `accept`; only new ones need it here, while somebody waits.
            if fresh && !l.wait.waiters.lock().is_empty() {
                arm(&mut self.sockets, l);
            }
            if !l.ready.is_empty() {
                l.wait.wake_by_ref();
            }
        }
        self.listeners = listeners;
    }

    /// Removes closed sockets; resets the ones closing for too long.
    fn reap(&mut self) {
        let now = arch::time();
        let mut i = 0;
        while i < self.closing.len() {
            let (h, since) = self.closing[i];
            let state = self.tcp(h).state();
            if matches!(state, tcp::State::Closed | tcp::State::TimeWait) {
                self.closing.swap_remove(i);
                self.remove(h);
                continue;
            }
            if now.saturating_sub(since) > LINGER_S * arch::TIME_HZ {
                // Reset now; removed at the next reap, after the RST went out.
                self.tcp(h).abort();
            }
            i += 1;
        }
    }

    fn release(&mut self, h: SocketHandle) {
        let s = self.tcp(h);
        match s.state() {
            tcp::State::Closed => {
                self.remove(h);
                return;
            }
            // The peer reset or never finished opening: nothing to say.
            tcp::State::SynReceived | tcp::State::SynSent | tcp::State::Listen => s.abort(),
            _ => s.close(),
        }
        self.closing.push((h, arch::time()));
        self.poll();
    }
}

/// A listening descriptor's object.
pub struct Listener {
    port: u16,
    wait: Arc<SockWait>,
}

/// A connection descriptor's object.
pub struct Conn {
    handle: SocketHandle,
    wait: Arc<SockWait>,
    /// Bytes taken from the socket that the program has not read yet (taken
    /// whole so that the socket's window reopens whole; see [`recv`]).
    stash: IrqMutex<Vec<u8>>,
}

impl Listener {
    /// Forgets a kernel coroutine's waker (its call ended another way).
    pub fn forget(&self, w: &Waker) {
        self.wait.waiters.lock().remove_task(w);
    }
}

impl Conn {
    /// Forgets a kernel coroutine's waker (its call ended another way).
    pub fn forget(&self, w: &Waker) {
        self.wait.waiters.lock().remove_task(w);
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let Ok(net) = net() else { return };
        let mut n = net.lock();
        if let Some(l) = n.listeners.remove(&self.port) {
            for h in l.spares.into_iter().chain(l.ready) {
                n.tcp(h).abort();
                n.closing.push((h, arch::time()));
            }
            n.poll();
        }
        drop(n);
        self.wait.wake_by_ref();
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Ok(net) = net() {
            net.lock().release(self.handle);
        }
        self.wait.wake_by_ref();
    }
}

/// `listen(port)`.
///
/// # Errors
/// `NoDevice`, `BadArgument` (port 0 or above 65535), `AddrInUse`.
pub fn listen(port: usize) -> Result<Listener, SysError> {
    let net = net()?;
    let port = u16::try_from(port)
        .ok()
        .filter(|&p| p != 0)
        .ok_or(SysError::BadArgument)?;
    let mut n = net.lock();
    if n.listeners.contains_key(&port) {
        return Err(SysError::AddrInUse);
    }
    let wait = Arc::new(SockWait::default());
    n.listeners.insert(
        port,
        Listen {
            spares: Vec::new(),
            ready: VecDeque::new(),
            wait: wait.clone(),
        },
    );
    n.tend_listeners();
    Ok(Listener { port, wait })
}

/// `accept` on `l`: `Some(connection)`, or `None` after `wait` parked the
/// caller in the listener's waiters.
pub fn accept(l: &Listener, wait: impl FnOnce(&mut Waiters)) -> Option<Result<Conn, SysError>> {
    let net = match net() {
        Ok(n) => n,
        Err(e) => return Some(Err(e)),
    };
    let mut n = net.lock();
    // Connections established since the last poll that changed a state.
    n.tend_listeners();
    let Some(state) = n.listeners.get_mut(&l.port) else {
        return Some(Err(SysError::BadFd));
    };
    if let Some(h) = state.ready.pop_front() {
        // A spare may now be added for the slot that freed.
        n.tend_listeners();
        return Some(Ok(Conn {
            handle: h,
            wait: Arc::new(SockWait::default()),
            stash: IrqMutex::new(Vec::new()),
        }));
    }
    wait(&mut l.wait.waiters.lock());
    let Net {
        sockets, listeners, ..
    } = &mut *n;
    if let Some(state) = listeners.get(&l.port) {
        arm(sockets, state);
    }
    None
}

/// Makes every listening socket of `l` wake its waiters when its connection
/// arrives. smoltcp keeps one waker per socket and drops it once woken (and
/// the woken waiter comes back through `accept`, which arms them again).
fn arm(sockets: &mut SocketSet<'static>, l: &Listen) {
    let w = Waker::from(l.wait.clone());
    for &h in &l.spares {
        sockets.get_mut::<tcp::Socket>(h).register_recv_waker(&w);
    }
}

fn refused(state: tcp::State) -> SysError {
    match state {
        tcp::State::Closed | tcp::State::Listen | tcp::State::SynSent | tcp::State::SynReceived => {
            SysError::ConnectionReset
        }
        _ => SysError::BrokenPipe,
    }
}

/// Reads up to `max` bytes from `c`: `Some(bytes)` (empty: the peer closed),
/// or `None` after `wait` parked the caller until something changes.
pub fn recv(
    c: &Conn,
    max: usize,
    wait: impl FnOnce(&mut Waiters),
) -> Option<Result<Vec<u8>, SysError>> {
    let net = match net() {
        Ok(n) => n,
        Err(e) => return Some(Err(e)),
    };
    let mut n = net.lock();
    let mut stash = c.stash.lock();
    let s = n.tcp(c.handle);
    if stash.is_empty() && s.can_recv() {
        // Take everything the socket holds, whatever the caller asked for:
        // smoltcp then sees its whole window open again and says so (it
        // announces a window only once it has doubled, and a peer told of a
        // window under a segment waits for its persist timer, seconds).
        let reopens = 2 * s.recv_queue() >= SOCKET_BUFFER;
        stash.resize(s.recv_queue(), 0);
        let got = s.recv_slice(&mut stash).unwrap_or(0);
        stash.truncate(got);
        if reopens {
            n.poll();
        }
    }
    if !stash.is_empty() {
        let take = max.min(stash.len());
        let rest = stash.split_off(take);
        return Some(Ok(core::mem::replace(&mut *stash, rest)));
    }
    drop(stash);
    let s = n.tcp(c.handle);
    if !s.may_recv() {
        return Some(match s.state() {
            // An open descriptor's socket is Closed only by a reset or a
            // timeout: an error, not an end of file.
            tcp::State::Closed => Err(SysError::ConnectionReset),
            _ => Ok(Vec::new()),
        });
    }
    let w = Waker::from(c.wait.clone());
    s.register_recv_waker(&w);
    wait(&mut c.wait.waiters.lock());
    None
}

/// Queues what fits of `data` on `c` and sends it at once: `Some(count)`, or
/// `None` after `wait` parked the caller until there is room.
pub fn send(
    c: &Conn,
    data: &[u8],
    wait: impl FnOnce(&mut Waiters),
) -> Option<Result<usize, SysError>> {
    let net = match net() {
        Ok(n) => n,
        Err(e) => return Some(Err(e)),
    };
    let mut n = net.lock();
    let s = n.tcp(c.handle);
    if !s.may_send() {
        return Some(Err(refused(s.state())));
    }
    if data.is_empty() {
        return Some(Ok(0));
    }
    if s.can_send() {
        let sent = s.send_slice(data).unwrap_or(0);
        n.poll();
        return Some(Ok(sent));
    }
    let w = Waker::from(c.wait.clone());
    s.register_send_waker(&w);
    wait(&mut c.wait.waiters.lock());
    None
}

/// Starts the net coroutine (after [`init`] found a device).
pub fn spawn_task() {
    if !present() {
        return;
    }
    if let Some(irq) = irq() {
        crate::console::enable_irq(irq);
    }
    let _ = crate::kexec().spawn(net_task(), ss_abi::Priority::MOST_IMPORTANT);
}

/// The net coroutine: acknowledge the device, poll, sleep until the next
/// interrupt or smoltcp's next timer.
async fn net_task() {
    let Ok(net) = net() else { return };
    loop {
        let delay = {
            let mut n = net.lock();
            if INTERRUPTED.swap(false, Ordering::SeqCst) {
                let _ = n.dev.0.borrow_mut().ack_interrupt();
                let ctx = CLAIMED.swap(usize::MAX, Ordering::SeqCst);
                if ctx != usize::MAX {
                    if let Some(irq) = irq() {
                        crate::console::complete_irq(ctx, irq);
                    }
                }
            }
            n.poll();
            let t = now();
            let Net { iface, sockets, .. } = &mut *n;
            iface.poll_delay(t, sockets)
        };
        let deadline = delay
            .map(|d| arch::time().saturating_add(d.total_micros() * (arch::TIME_HZ / 1_000_000)));
        core::future::poll_fn(|cx| {
            if INTERRUPTED.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            if let Some(d) = deadline {
                if arch::time() >= d {
                    return Poll::Ready(());
                }
                crate::sched::wake_at(d, cx.waker());
            }
            *TASK_WAKER.lock() = Some(cx.waker().clone());
            // An interrupt between the check and the store found no waker.
            if INTERRUPTED.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
    }
}
