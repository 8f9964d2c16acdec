//! Networking: a virtio-net device (the `virtio-drivers` crate) and TCP (the
//! `smoltcp` crate), interrupt-driven, with smoltcp's clock running on the
//! `time` CSR (the original froze it).
//!
//! # Shape
//!
//! One [`Net`] under one lock: the device, the interface (10.0.2.15/24,
//! gateway 10.0.2.2 — QEMU's user networking) and the TCP sockets, **each
//! alone in a socket set of its own**. smoltcp's `poll_egress` and `poll_at`
//! visit every socket of the set they are given and its ingress scans the
//! set for the segment's socket, so with one shared set every reply, every
//! frame and every timer cost work in proportion to the sockets open
//! (connections, spares, closing ones). Here [`Net::poll`] reads each frame's
//! addresses itself and hands it to the one socket smoltcp would pick (a
//! table by peer and port, else one listening on the port, else none: smoltcp
//! resets), and a socket's egress and timer are polled on its own set: the
//! work per request no longer grows with the connections.
//!
//! Who sends what a socket owes:
//!
//! - the **net coroutine** ([`net_task`], a kernel coroutine at the most
//!   important level), woken by the device's interrupt and at the earliest
//!   socket timer (retransmission, linger), on a tick, sends what the frames
//!   it took in call for (ACKs, handshakes) and what the due timers do;
//! - a **system call that queued bytes** (`send`), at once and for that one
//!   socket, so a reply leaves without waiting for a hop to another coroutine;
//! - a **read that reopened a receive window at least half full**, so the
//!   peer goes on at once instead of waiting for its persist timer.
//!
//! A system call that arms a timer earlier than the net coroutine's wake-up
//! moves that wake-up forward (a timer, not an immediate switch).
//!
//! # Transmitting
//!
//! A frame is queued on the device and the device notified; nobody waits for
//! the device to take it (QEMU takes it on another thread, and waiting for
//! that held the lock for most of a reply's cost). Buffers come back once
//! used. With the queue full, a socket that still owes frames waits for the
//! device's interrupt (at most a tick) instead of being polled in a loop.
//! The device is told of new frames (a register write: an exit to QEMU,
//! under QEMU's global lock) once the `NET` lock is released, not while
//! holding it.
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
//! that socket — no scan of every socket after a poll. Waiters found while
//! the `NET` lock is held are woken as it is released ([`NetGuard`]), so the
//! other harts do not spin on the lock while threads are made runnable.
//!
//! # Listening and accepting
//!
//! smoltcp accepts one connection per listening socket. A listener keeps
//! [`LISTEN_SPARES`] sockets listening on its port; after every frame that a
//! spare took, before the next frame, an established one moves to the
//! listener's ready queue (at most `LISTEN_BACKLOG`) and fresh ones top the
//! listening ones up, so a burst of SYNs is taken up to the backlog however
//! few listen. With the queue full no spare is added, and further connection
//! attempts are reset.
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
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use core::task::{Poll, Waker};

use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, HardwareAddress, IpAddress, IpCidr,
    IpEndpoint, IpProtocol, Ipv4Address, Ipv4Packet, TcpPacket,
};
use ss_abi::syscall::{SysError, LISTEN_BACKLOG};
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::arch;
use crate::fd::{wake_all, Waiters};
use crate::sync::{IrqGuard, IrqMutex};

/// The guest's address (QEMU user networking's default for the guest).
pub const GUEST_IP: [u8; 4] = [10, 0, 2, 15];
const GATEWAY: [u8; 4] = [10, 0, 2, 2];
/// QEMU virt's virtio-mmio slots: base of the first, size of each, how many;
/// slot `i` interrupts on PLIC source `1 + i`.
const MMIO_BASE: usize = 0x1000_1000;
const MMIO_SIZE: usize = 0x1000;
const MMIO_SLOTS: usize = 8;
/// How long a socket may hold back the ACK of received data, waiting for a
/// reply to carry it.
const ACK_DELAY: smoltcp::time::Duration = smoltcp::time::Duration::from_millis(10);
/// Descriptors per virtqueue, and bytes per receive buffer (a full frame).
const QUEUE: usize = 64;
const RX_BUF: usize = 2048;
/// Bytes of each socket's receive and of its send buffer (a paper request,
/// 15×15, is 916 bytes; a 64×64 one passes in several windows).
pub const SOCKET_BUFFER: usize = 4096;

/// A listener takes no new connection while less of the kernel heap than this
/// is free (a connection's socket costs ~10 KiB of it; the rest of the kernel
/// — processes, threads, operations in flight — keeps this much headroom
/// whatever the network peers do).
pub const HEAP_RESERVE: usize = 4 << 20;

/// Free heap below which a read keeps nothing of a socket's bytes beyond
/// what it hands over (see [`recv`]).
pub const STASH_FLOOR: usize = 3 << 20;
/// Sockets a listener keeps listening. A frame that takes one (a SYN) is
/// followed, before the next frame, by a fresh one while the listener's queue
/// has room, so a burst of SYNs up to `LISTEN_BACKLOG` is taken however few
/// listen; an attempt with no socket listening is reset.
pub const LISTEN_SPARES: usize = 4;
/// Seconds a closed connection may take to finish before it is reset.
pub const LINGER_S: u64 = 10;

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

/// The device's MMIO transport, but for the queues' notifications, which are
/// deferred: buffers queued under the `NET` lock are announced once the lock
/// is released ([`NetGuard`]), one register write per queue, so that the lock
/// is not held through the exit to QEMU that a device register write costs
/// (QEMU's device side runs under its own global lock, which its network
/// thread holds often) and a poll pays that exit once, not once per buffer.
struct Mmio(MmioTransport<'static>);

/// The `VIRTIO_F_EVENT_IDX` feature bit (virtio 1.2, 6).
const EVENT_IDX: u64 = 1 << 29;
/// The offset of the MMIO `QueueNotify` register (virtio 1.2, 4.2.2; the
/// same in the legacy layout).
const QUEUE_NOTIFY: usize = 0x50;
/// The queues (a bit each: receive 0, transmit 1) with buffers the device has
/// not been told of; queues from [`DEFERRED_QUEUES`] on are told at once.
static PENDING_NOTIFY: AtomicU8 = AtomicU8::new(0);
/// How many queues [`PENDING_NOTIFY`] has bits for.
const DEFERRED_QUEUES: u16 = u8::BITS as u16;
/// The device's `QueueNotify` register (0: no device yet).
static NOTIFY_REG: AtomicUsize = AtomicUsize::new(0);

/// Tells the device of the buffers queued since the last call, one register
/// write per queue that has any: after the `NET` lock's release, so a poll
/// that recycles many receive buffers or queues many frames costs one exit
/// to QEMU's device model per queue, not one per buffer.
fn notify_device() {
    let pending = PENDING_NOTIFY.swap(0, Ordering::SeqCst);
    if pending == 0 {
        return;
    }
    let reg = NOTIFY_REG.load(Ordering::SeqCst);
    if reg == 0 {
        return;
    }
    // The rings' updates reach memory before the device looks.
    core::sync::atomic::fence(Ordering::SeqCst);
    for queue in 0..DEFERRED_QUEUES {
        if pending & (1 << queue) != 0 {
            // SAFETY: `reg` is the identity-mapped `QueueNotify` register of
            // the device found at boot; writing a queue's index only asks the
            // device to look at that queue's available ring.
            unsafe { (reg as *mut u32).write_volatile(u32::from(queue)) };
        }
    }
}

impl Transport for Mmio {
    fn device_type(&self) -> DeviceType {
        self.0.device_type()
    }
    fn read_device_features(&mut self) -> u64 {
        // Not `VIRTIO_F_EVENT_IDX`: with it, virtio-drivers (0.13) asks for a
        // notification whenever the available index is past the device's
        // event index — not only when it has just crossed it — and QEMU
        // leaves that index behind while it wants none, so every received
        // frame's recycled buffer and most queued frames cost an exit to
        // QEMU (as many receive notifications as frames, measured). Without
        // it the driver reads the used ring's `NO_NOTIFY` flag, which QEMU
        // sets while it has buffers or a transmit pass pending.
        self.0.read_device_features() & !EVENT_IDX
    }
    fn write_driver_features(&mut self, driver_features: u64) {
        self.0.write_driver_features(driver_features)
    }
    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.0.max_queue_size(queue)
    }
    fn notify(&mut self, queue: u16) {
        // Deferred once the device is up (its queues are only used under
        // the `NET` lock then, whose release calls `notify_device`).
        if queue < DEFERRED_QUEUES && NOTIFY_REG.load(Ordering::SeqCst) != 0 {
            PENDING_NOTIFY.fetch_or(1 << queue, Ordering::SeqCst);
        } else {
            self.0.notify(queue)
        }
    }
    fn get_status(&self) -> DeviceStatus {
        self.0.get_status()
    }
    fn set_status(&mut self, status: DeviceStatus) {
        self.0.set_status(status)
    }
    fn set_guest_page_size(&mut self, guest_page_size: u32) {
        self.0.set_guest_page_size(guest_page_size)
    }
    fn requires_legacy_layout(&self) -> bool {
        self.0.requires_legacy_layout()
    }
    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        self.0
            .queue_set(queue, size, descriptors, driver_area, device_area)
    }
    fn queue_unset(&mut self, queue: u16) {
        self.0.queue_unset(queue)
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        self.0.queue_used(queue)
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.0.ack_interrupt()
    }
    fn read_config_generation(&self) -> u32 {
        self.0.read_config_generation()
    }
    fn read_config_space<T: FromBytes + IntoBytes>(
        &self,
        offset: usize,
    ) -> virtio_drivers::Result<T> {
        self.0.read_config_space(offset)
    }
    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: T,
    ) -> virtio_drivers::Result<()> {
        self.0.write_config_space(offset, value)
    }
}

/// The virtio-net device, with its receive buffers (one per receive
/// descriptor, always queued but while smoltcp reads one) and its transmit
/// buffers in flight. A frame to send is queued and the device notified; the
/// sender does not wait for the device to take it (QEMU takes it on its own
/// thread): a buffer comes back, for reuse, once the device has used it.
struct Nic {
    raw: VirtIONetRaw<KernelHal, Mmio, QUEUE>,
    /// Receive buffers queued, by descriptor token.
    rx: Vec<Option<Vec<u8>>>,
    /// Transmit buffers the device has not used yet, by descriptor token.
    tx: Vec<Option<Vec<u8>>>,
    /// Used transmit buffers, for reuse.
    spare_tx: Vec<Vec<u8>>,
    /// Bytes of the virtio-net header before each frame.
    hdr: usize,
}

/// A received frame: its buffer and where the frame lies in it.
struct RxBuffer {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl RxBuffer {
    fn packet(&self) -> &[u8] {
        self.buf
            .get(self.start..self.start + self.len)
            .unwrap_or_default()
    }
}

impl Nic {
    fn new(transport: MmioTransport<'static>, rx_buf: usize) -> virtio_drivers::Result<Nic> {
        let raw = VirtIONetRaw::new(Mmio(transport))?;
        let hdr = raw.fill_buffer_header(&mut [0; 64])?;
        let mut nic = Nic {
            raw,
            rx: (0..QUEUE).map(|_| None).collect(),
            tx: (0..QUEUE).map(|_| None).collect(),
            spare_tx: Vec::new(),
            hdr,
        };
        for _ in 0..QUEUE {
            nic.queue_rx(vec![0; rx_buf])?;
        }
        Ok(nic)
    }

    /// Gives `buf` to the device to receive into.
    fn queue_rx(&mut self, mut buf: Vec<u8>) -> virtio_drivers::Result {
        // SAFETY: `buf` is kept, untouched, in `rx[token]` until the device
        // has used it (`receive`), and its heap block does not move.
        let token = unsafe { self.raw.receive_begin(&mut buf)? };
        let place = self
            .rx
            .get_mut(usize::from(token))
            .ok_or(virtio_drivers::Error::WrongToken)?;
        *place = Some(buf);
        Ok(())
    }

    fn mac_address(&self) -> [u8; 6] {
        self.raw.mac_address()
    }

    fn ack_interrupt(&mut self) {
        let _ = self.raw.ack_interrupt();
    }

    fn can_recv(&self) -> bool {
        self.raw.poll_receive().is_some()
    }

    /// The next received frame.
    fn receive(&mut self) -> virtio_drivers::Result<RxBuffer> {
        let token = self
            .raw
            .poll_receive()
            .ok_or(virtio_drivers::Error::NotReady)?;
        let mut buf = self
            .rx
            .get_mut(usize::from(token))
            .and_then(Option::take)
            .ok_or(virtio_drivers::Error::WrongToken)?;
        // SAFETY: `buf` is the buffer queued under `token`.
        let (start, len) = unsafe { self.raw.receive_complete(token, &mut buf)? };
        Ok(RxBuffer { buf, start, len })
    }

    /// Queues a used receive buffer again.
    fn recycle_rx_buffer(&mut self, b: RxBuffer) -> virtio_drivers::Result {
        self.queue_rx(b.buf)
    }

    /// Takes back the transmit buffers the device has used.
    fn reclaim(&mut self) {
        while let Some(token) = self.raw.poll_transmit() {
            let Some(buf) = self.tx.get_mut(usize::from(token)).and_then(Option::take) else {
                break;
            };
            // SAFETY: `buf` is the buffer queued under `token`.
            let _ = unsafe { self.raw.transmit_complete(token, &buf) };
            self.spare_tx.push(buf);
        }
    }

    fn can_send(&mut self) -> bool {
        self.reclaim();
        self.raw.can_send()
    }

    /// Builds a frame of `len` bytes with `f` and queues it.
    fn transmit<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        self.reclaim();
        let mut buf = self.spare_tx.pop().unwrap_or_default();
        buf.clear();
        buf.resize(self.hdr + len, 0);
        let _ = self.raw.fill_buffer_header(&mut buf);
        let r = f(&mut buf[self.hdr..]);
        // SAFETY: `buf` is kept, untouched, in `tx[token]` until the device
        // has used it (`reclaim`), and its heap block does not move.
        if let Ok(token) = unsafe { self.raw.transmit_begin(&buf) } {
            if let Some(place) = self.tx.get_mut(usize::from(token)) {
                *place = Some(buf);
                TX_PACKETS.fetch_add(1, Ordering::Relaxed);
            } else {
                // Cannot happen (tokens are below QUEUE); never free a buffer
                // the device may still read.
                core::mem::forget(buf);
            }
        } else {
            self.spare_tx.push(buf);
        }
        r
    }
}

/// The device as smoltcp sees it. [`Net::poll`] takes each received frame
/// from the device itself, to see which socket it is for, and leaves it in
/// `next` for smoltcp's one `receive` that follows.
struct Device {
    nic: RefCell<Nic>,
    next: Option<RxBuffer>,
}

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
        self.0.borrow_mut().transmit(len, f)
    }
}

impl phy::Device for Device {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let buf = self.next.take()?;
        Some((
            Rx {
                nic: &self.nic,
                buf: Some(buf),
            },
            Tx(&self.nic),
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        self.nic.borrow_mut().can_send().then_some(Tx(&self.nic))
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
        if list.is_empty() {
            return;
        }
        if NET_HOLDER.load(Ordering::Relaxed) == arch::hart_id() {
            // Found under the `NET` lock (smoltcp processing a frame, a
            // listener tended): woken as the lock is released, so the other
            // harts do not wait on it while threads are made runnable.
            DEFERRED.lock().push(list);
        } else {
            wake_all(list);
        }
    }
}

/// The hart holding the `NET` lock (`usize::MAX`: none).
static NET_HOLDER: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Waiters woken while the `NET` lock was held, woken on its release.
static DEFERRED: IrqMutex<Vec<Waiters>> = IrqMutex::new(Vec::new());

/// The `NET` lock, held: its release wakes the waiters found meanwhile.
struct NetGuard(Option<IrqGuard<'static, Net>>);

fn lock(net: &'static IrqMutex<Net>) -> NetGuard {
    let guard = net.lock();
    NET_HOLDER.store(arch::hart_id(), Ordering::Relaxed);
    NetGuard(Some(guard))
}

impl core::ops::Deref for NetGuard {
    type Target = Net;
    fn deref(&self) -> &Net {
        self.0.as_ref().expect("held until drop")
    }
}

impl core::ops::DerefMut for NetGuard {
    fn deref_mut(&mut self) -> &mut Net {
        self.0.as_mut().expect("held until drop")
    }
}

impl Drop for NetGuard {
    fn drop(&mut self) {
        // Still held: no other hart is between its lock and its store.
        NET_HOLDER.store(usize::MAX, Ordering::Relaxed);
        drop(self.0.take());
        notify_device();
        let woken = core::mem::take(&mut *DEFERRED.lock());
        for list in woken {
            wake_all(list);
        }
    }
}

/// A socket's place in [`Net::slots`].
type Id = usize;

/// The connection a segment belongs to: the peer's endpoint and the local
/// port (the guest has one address).
type Tuple = (IpEndpoint, u16);

/// One TCP socket, alone in a socket set of its own: smoltcp's `poll_egress`
/// and `poll_at` visit every socket of the set they are given, so with one set
/// per socket a reply or a timer costs one socket's work, however many
/// connections are open.
struct Slot {
    set: SocketSet<'static>,
    handle: SocketHandle,
    /// Its key in [`Net::by_tuple`] once it has a peer.
    tuple: Option<Tuple>,
    /// When smoltcp wants it polled again (`time` CSR; `None`: on an event).
    due: Option<u64>,
    /// While it is a listener's spare: the listener's port.
    spare_of: Option<u16>,
    /// Waiting in [`Net::dirty`] for the poll's egress.
    dirty: bool,
    /// Waiting in [`Net::blocked`] for room in the transmit queue.
    blocked: bool,
}

/// Where a received frame goes.
enum Route {
    /// To this socket's set.
    Sock(Id),
    /// To no socket (smoltcp answers a TCP segment with a reset).
    Nobody,
    /// An ARP frame: a neighbour may have been found, so every socket's
    /// egress may proceed.
    Arp,
}

/// A listener's state in [`Net`].
struct Listen {
    spares: Vec<Id>,
    ready: VecDeque<Id>,
    wait: Arc<SockWait>,
}

/// Everything networking, under one lock.
struct Net {
    dev: Device,
    iface: Interface,
    /// Every TCP socket (`None`: a free place, listed in `free`).
    slots: Vec<Option<Slot>>,
    free: Vec<Id>,
    /// The sockets with a peer (handshake begun, established, closing).
    by_tuple: BTreeMap<Tuple, Id>,
    /// An empty set, for the frames no socket takes.
    nobody: SocketSet<'static>,
    /// Sockets whose egress the current poll owes.
    dirty: Vec<Id>,
    /// Sockets that found the transmit queue full: their egress resumes once
    /// the device has used a buffer (its interrupt wakes the net coroutine).
    blocked: Vec<Id>,
    listeners: BTreeMap<u16, Listen>,
    /// Closed connections finishing, with the `time` they were closed.
    closing: Vec<(Id, u64)>,
    /// A listener has fewer sockets listening than it wants because the heap
    /// was short ([`HEAP_RESERVE`]): every poll (at least one a tick) tries
    /// again, since no frame will reach a listener without listening sockets.
    starved: bool,
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
/// A socket's timer became due before the net coroutine's wake-up.
static KICKED: AtomicBool = AtomicBool::new(false);
/// When the sleeping net coroutine wakes (`time` CSR; `u64::MAX`: only on an
/// event; 0: it is running and will look at every socket's timer). Written
/// and compared under the `NET` lock.
static NEXT_DUE: AtomicU64 = AtomicU64::new(u64::MAX);
static TASK_WAKER: IrqMutex<Option<Waker>> = IrqMutex::new(None);

/// `time` CSR ticks per microsecond (smoltcp's clock unit).
const TICKS_PER_US: u64 = arch::TIME_HZ / 1_000_000;

fn now() -> Instant {
    Instant::from_micros((arch::time() / TICKS_PER_US) as i64)
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
        let mut dev = Device {
            nic: RefCell::new(nic),
            next: None,
        };
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
                slots: Vec::new(),
                free: Vec::new(),
                by_tuple: BTreeMap::new(),
                nobody: SocketSet::new(Vec::new()),
                dirty: Vec::new(),
                blocked: Vec::new(),
                listeners: BTreeMap::new(),
                closing: Vec::new(),
                starved: false,
            })
        });
        IRQ.store(1 + slot, Ordering::SeqCst);
        NOTIFY_REG.store(base + QUEUE_NOTIFY, Ordering::SeqCst);
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

/// A socket wants polling at `due`: if the net coroutine would sleep past
/// it, bring its wake-up forward (a timer, not a wake now: the coroutine has
/// nothing to do before `due`). Under the `NET` lock.
fn kick(due: u64) {
    if due >= NEXT_DUE.load(Ordering::Relaxed) {
        return;
    }
    let waker = TASK_WAKER.lock();
    NEXT_DUE.store(due, Ordering::Relaxed);
    match waker.as_ref() {
        Some(w) if due > arch::time() => {
            crate::sched::forget_wake(w);
            crate::sched::wake_at(due, w);
        }
        // Due now, or the coroutine is between its poll and its sleep (it
        // looks at `KICKED` before sleeping).
        _ => {
            KICKED.store(true, Ordering::SeqCst);
            drop(waker);
            if let Some(w) = TASK_WAKER.lock().take() {
                w.wake();
            }
        }
    }
}

impl Net {
    /// Takes every frame the device holds to the one socket it is for, then
    /// sends what those sockets, and the ones whose timer is due, owe; then
    /// the closing sockets' bookkeeping.
    fn poll(&mut self) {
        POLLS.fetch_add(1, Ordering::Relaxed);
        self.dev.nic.borrow_mut().reclaim();
        let t = now();
        let mut arp = false;
        let mut spares = false;
        loop {
            let buf = {
                let mut nic = self.dev.nic.borrow_mut();
                if !nic.can_recv() {
                    break;
                }
                match nic.receive() {
                    Ok(b) => b,
                    Err(_) => break,
                }
            };
            RX_PACKETS.fetch_add(1, Ordering::Relaxed);
            let route = self.route(buf.packet());
            self.dev.next = Some(buf);
            let Net {
                dev,
                iface,
                slots,
                nobody,
                ..
            } = self;
            match route {
                Route::Sock(id) => {
                    if let Some(s) = slots.get_mut(id).and_then(Option::as_mut) {
                        let _ = iface.poll_ingress_single(t, dev, &mut s.set);
                        if let Some(port) = s.spare_of {
                            // A connection begun, established or failed:
                            // top the spares up before the next frame.
                            self.tend(port);
                        }
                    }
                    self.mark(id);
                }
                Route::Nobody | Route::Arp => {
                    let _ = iface.poll_ingress_single(t, dev, nobody);
                    arp |= matches!(route, Route::Arp);
                }
            }
            if let Some(b) = self.dev.next.take() {
                let _ = self.dev.nic.borrow_mut().recycle_rx_buffer(b);
            }
        }
        if !self.blocked.is_empty() && self.dev.nic.borrow_mut().can_send() {
            for id in core::mem::take(&mut self.blocked) {
                if let Some(s) = self.slots.get_mut(id).and_then(Option::as_mut) {
                    s.blocked = false;
                }
                self.mark(id);
            }
        }
        let ticks = arch::time();
        for id in 0..self.slots.len() {
            if let Some(s) = &self.slots[id] {
                if arp || s.due.is_some_and(|d| d <= ticks) {
                    self.mark(id);
                }
            }
        }
        while let Some(id) = self.dirty.pop() {
            self.egress(id, t);
            spares |= self.slots[id]
                .as_ref()
                .is_some_and(|s| s.spare_of.is_some());
        }
        if spares || core::mem::take(&mut self.starved) {
            // A handshake may have timed out, or the heap has room again.
            let ports: Vec<u16> = self.listeners.keys().copied().collect();
            for port in ports {
                self.tend(port);
            }
        }
        if !self.closing.is_empty() {
            self.reap();
        }
    }

    /// Which socket smoltcp would hand `frame` to: the one whose peer sent
    /// it, else one listening on its port. smoltcp's own checks follow on that
    /// socket (a segment it does not accept is answered with a reset, as it
    /// would be with no socket).
    fn route(&self, frame: &[u8]) -> Route {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return Route::Nobody;
        };
        match eth.ethertype() {
            EthernetProtocol::Ipv4 => {}
            EthernetProtocol::Arp => return Route::Arp,
            _ => return Route::Nobody,
        }
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            return Route::Nobody;
        };
        let [a, b, c, d] = GUEST_IP;
        if ip.next_header() != IpProtocol::Tcp || ip.dst_addr() != Ipv4Address::new(a, b, c, d) {
            return Route::Nobody;
        }
        let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
            return Route::Nobody;
        };
        let remote = IpEndpoint::new(IpAddress::Ipv4(ip.src_addr()), tcp.src_port());
        let port = tcp.dst_port();
        if let Some(&id) = self.by_tuple.get(&(remote, port)) {
            if let Some(s) = self.tcp_ref(id) {
                let live = !matches!(s.state(), tcp::State::Closed | tcp::State::Listen);
                let same = s.remote_endpoint() == Some(remote)
                    && s.local_endpoint().map(|e| e.port) == Some(port);
                if live && same {
                    return Route::Sock(id);
                }
            }
        }
        if let Some(l) = self.listeners.get(&port) {
            for &id in &l.spares {
                if self
                    .tcp_ref(id)
                    .is_some_and(|s| s.state() == tcp::State::Listen)
                {
                    return Route::Sock(id);
                }
            }
        }
        Route::Nobody
    }

    /// Queues `id`'s egress for the end of the poll.
    fn mark(&mut self, id: Id) {
        if let Some(s) = self.slots.get_mut(id).and_then(Option::as_mut) {
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// Sends what socket `id` owes, and notes when it wants polling next.
    fn egress(&mut self, id: Id, t: Instant) {
        let Net {
            dev,
            iface,
            slots,
            blocked,
            ..
        } = self;
        let Some(s) = slots.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        s.dirty = false;
        while iface.poll_egress(t, dev, &mut s.set) == PollResult::SocketStateChanged {}
        s.due = iface
            .poll_at(t, &s.set)
            .map(|at| (at.total_micros().max(0) as u64).saturating_mul(TICKS_PER_US));
        if !dev.nic.borrow_mut().can_send() {
            // It may owe more than the queue took: not a timer to spin on,
            // but a wait for the device to use a buffer.
            if s.due.is_some_and(|d| d <= arch::time()) {
                s.due = None;
                if !s.blocked {
                    s.blocked = true;
                    blocked.push(id);
                }
                return;
            }
        }
        if let Some(d) = s.due {
            kick(d);
        }
    }

    /// When the net coroutine must next look: the earliest socket timer, or
    /// the earliest closing socket's end of linger.
    fn next_due(&self) -> Option<u64> {
        let timers = self.slots.iter().flatten().filter_map(|s| s.due);
        let linger = self
            .closing
            .iter()
            .map(|&(_, since)| since.saturating_add(LINGER_S * arch::TIME_HZ));
        // The device's interrupt ends a wait for transmit room; a tick bounds
        // it in case none comes.
        let room = (!self.blocked.is_empty()).then(|| arch::time() + crate::sched::TICK);
        // A starved listener is tended again at the next tick.
        let starved = self.starved.then(|| arch::time() + crate::sched::TICK);
        timers.chain(linger).chain(room).chain(starved).min()
    }

    /// A fresh socket, or `None` if the table cannot grow (a full heap).
    fn new_socket(&mut self) -> Option<Id> {
        if self.free.is_empty() && self.slots.try_reserve(1).is_err() {
            return None;
        }
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
        );
        // Requests and replies are small and latency matters: no Nagle. The
        // ACK of a request is delayed (smoltcp's default 10 ms, sent at once
        // when more than a segment is unacknowledged) so that it rides on
        // the reply, which the servers send well within that: one frame per
        // exchange instead of a bare ACK and then the reply.
        s.set_nagle_enabled(false);
        s.set_ack_delay(Some(ACK_DELAY));
        SOCKETS.fetch_add(1, Ordering::Relaxed);
        let mut set = SocketSet::new(Vec::with_capacity(1));
        let handle = set.add(s);
        let slot = Slot {
            set,
            handle,
            tuple: None,
            due: None,
            spare_of: None,
            dirty: false,
            blocked: false,
        };
        match self.free.pop() {
            Some(id) => {
                self.slots[id] = Some(slot);
                Some(id)
            }
            None => {
                self.slots.push(Some(slot));
                Some(self.slots.len() - 1)
            }
        }
    }

    fn remove(&mut self, id: Id) {
        self.unregister(id);
        if self.slots.get_mut(id).and_then(Option::take).is_some() {
            SOCKETS.fetch_sub(1, Ordering::Relaxed);
            self.free.push(id);
        }
    }

    /// Files socket `id` under its peer, once it has one.
    fn register(&mut self, id: Id) {
        let Some(s) = self.slots.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        if s.tuple.is_some() {
            return;
        }
        let sock = s.set.get::<tcp::Socket>(s.handle);
        if let (Some(remote), Some(local)) = (sock.remote_endpoint(), sock.local_endpoint()) {
            let key = (remote, local.port);
            s.tuple = Some(key);
            self.by_tuple.insert(key, id);
        }
    }

    /// Takes socket `id` out of [`Net::by_tuple`].
    fn unregister(&mut self, id: Id) {
        let Some(key) = self
            .slots
            .get_mut(id)
            .and_then(Option::as_mut)
            .and_then(|s| s.tuple.take())
        else {
            return;
        };
        if self.by_tuple.get(&key) == Some(&id) {
            self.by_tuple.remove(&key);
        }
    }

    fn tcp(&mut self, id: Id) -> &mut tcp::Socket<'static> {
        let s = self.slots[id].as_mut().expect("net: a live socket");
        s.set.get_mut::<tcp::Socket>(s.handle)
    }

    fn tcp_ref(&self, id: Id) -> Option<&tcp::Socket<'static>> {
        let s = self.slots.get(id)?.as_ref()?;
        Some(s.set.get::<tcp::Socket>(s.handle))
    }

    /// Moves the listener's established connections to its ready queue and
    /// keeps `LISTEN_SPARES` sockets listening while the queue has room.
    fn tend(&mut self, port: u16) {
        let Some(mut l) = self.listeners.remove(&port) else {
            return;
        };
        // Sockets that listen anew have no waker yet.
        let mut fresh = false;
        let mut listening = 0;
        let mut i = 0;
        while i < l.spares.len() {
            let id = l.spares[i];
            match self.tcp(id).state() {
                tcp::State::Listen => {
                    // Back from SynReceived after a reset: no peer now.
                    self.unregister(id);
                    listening += 1;
                    i += 1;
                }
                tcp::State::SynReceived => {
                    self.register(id);
                    i += 1;
                }
                tcp::State::Closed => {
                    // A handshake that failed: listen again.
                    self.unregister(id);
                    if self.tcp(id).listen(port).is_err() {
                        l.spares.swap_remove(i);
                        self.remove(id);
                    } else {
                        fresh = true;
                        listening += 1;
                        i += 1;
                    }
                }
                _ => {
                    l.spares.swap_remove(i);
                    self.register(id);
                    if let Some(s) = self.slots[id].as_mut() {
                        s.spare_of = None;
                    }
                    if l.ready.len() < LISTEN_BACKLOG {
                        l.ready.push_back(id);
                    } else {
                        self.tcp(id).abort();
                        self.closing.push((id, arch::time()));
                        self.egress(id, now());
                    }
                }
            }
        }
        while listening < LISTEN_SPARES && l.ready.len() + l.spares.len() < LISTEN_BACKLOG {
            if crate::mm::heap_free() < HEAP_RESERVE {
                // Out of room for more connections: a SYN finds no listening
                // socket and smoltcp resets it. It costs that connection only,
                // never a kernel allocation that fails. Retried every poll.
                self.starved = true;
                break;
            }
            let Some(id) = self.new_socket() else {
                self.starved = true;
                break;
            };
            if self.tcp(id).listen(port).is_err() {
                self.remove(id);
                break;
            }
            if let Some(s) = self.slots[id].as_mut() {
                s.spare_of = Some(port);
            }
            l.spares.push(id);
            listening += 1;
            fresh = true;
        }
        // A socket whose waker fired woke the waiters, who re-arm all in
        // `accept`; only new ones need it here, while somebody waits.
        if fresh && !l.wait.waiters.lock().is_empty() {
            self.arm(&l);
        }
        if !l.ready.is_empty() {
            l.wait.wake_by_ref();
        }
        self.listeners.insert(port, l);
    }

    /// Makes every listening socket of `l` wake its waiters when its
    /// connection arrives. smoltcp keeps one waker per socket and drops it
    /// once woken (and the woken waiter comes back through `accept`, which
    /// arms them again).
    fn arm(&mut self, l: &Listen) {
        let w = Waker::from(l.wait.clone());
        for &id in &l.spares {
            self.tcp(id).register_recv_waker(&w);
        }
    }

    /// Removes closed sockets; resets the ones closing for too long.
    fn reap(&mut self) {
        let ticks = arch::time();
        let mut i = 0;
        while i < self.closing.len() {
            let (id, since) = self.closing[i];
            if ticks.saturating_sub(since) > LINGER_S * arch::TIME_HZ
                && !matches!(
                    self.tcp(id).state(),
                    tcp::State::Closed | tcp::State::TimeWait
                )
            {
                // Reset now: the RST leaves at once.
                self.tcp(id).abort();
                self.egress(id, now());
            }
            if matches!(
                self.tcp(id).state(),
                tcp::State::Closed | tcp::State::TimeWait
            ) {
                self.closing.swap_remove(i);
                self.remove(id);
                continue;
            }
            i += 1;
        }
    }

    /// Closes socket `id` (its descriptor's last reference went).
    fn release(&mut self, id: Id) {
        let s = self.tcp(id);
        match s.state() {
            tcp::State::Closed => {
                self.remove(id);
                return;
            }
            // The peer reset or never finished opening: nothing to say.
            tcp::State::SynReceived | tcp::State::SynSent | tcp::State::Listen => s.abort(),
            _ => s.close(),
        }
        let since = arch::time();
        self.closing.push((id, since));
        self.egress(id, now());
        kick(since.saturating_add(LINGER_S * arch::TIME_HZ));
        self.reap();
    }
}

/// A listening descriptor's object.
pub struct Listener {
    port: u16,
    wait: Arc<SockWait>,
}

/// A connection descriptor's object.
pub struct Conn {
    id: Id,
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

impl crate::fd::WaitSite for Listener {
    fn take_dead_waiters(&self) -> Vec<Arc<crate::proc::Thread>> {
        self.wait.waiters.lock().take_dead()
    }
}

impl Conn {
    /// Forgets a kernel coroutine's waker (its call ended another way).
    pub fn forget(&self, w: &Waker) {
        self.wait.waiters.lock().remove_task(w);
    }
}

impl crate::fd::WaitSite for Conn {
    fn take_dead_waiters(&self) -> Vec<Arc<crate::proc::Thread>> {
        self.wait.waiters.lock().take_dead()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let Ok(net) = net() else { return };
        let mut n = lock(net);
        if let Some(l) = n.listeners.remove(&self.port) {
            let since = arch::time();
            for id in l.spares.into_iter().chain(l.ready) {
                if let Some(s) = n.slots[id].as_mut() {
                    s.spare_of = None;
                }
                n.tcp(id).abort();
                n.closing.push((id, since));
                n.egress(id, now());
            }
            n.reap();
        }
        drop(n);
        self.wait.wake_by_ref();
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Ok(net) = net() {
            lock(net).release(self.id);
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
    let mut n = lock(net);
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
    n.tend(port);
    Ok(Listener { port, wait })
}

/// `accept` on `l`: `Some(connection)`, or `None` after `wait` parked the
/// caller in the listener's waiters.
pub fn accept(l: &Listener, wait: impl FnOnce(&mut Waiters)) -> Option<Result<Conn, SysError>> {
    let net = match net() {
        Ok(n) => n,
        Err(e) => return Some(Err(e)),
    };
    let mut n = lock(net);
    // Connections established by a state change the poll did not see.
    n.tend(l.port);
    let Some(state) = n.listeners.get_mut(&l.port) else {
        return Some(Err(SysError::BadFd));
    };
    if let Some(id) = state.ready.pop_front() {
        // A spare may now be added for the slot that freed.
        n.tend(l.port);
        return Some(Ok(Conn {
            id,
            wait: Arc::new(SockWait::default()),
            stash: IrqMutex::new(Vec::new()),
        }));
    }
    wait(&mut l.wait.waiters.lock());
    if let Some(state) = n.listeners.remove(&l.port) {
        n.arm(&state);
        n.listeners.insert(l.port, state);
    }
    None
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
    let mut n = lock(net);
    let mut stash = c.stash.lock();
    let s = n.tcp(c.id);
    if stash.is_empty() && s.can_recv() {
        // Take everything the socket holds, whatever the caller asked for:
        // smoltcp then sees its whole window open again and says so (it
        // announces a window only once it has doubled, and a peer told of a
        // window under a segment waits for its persist timer, seconds).
        // Only while the heap has room to spare: a stash outlives the call
        // (up to `SOCKET_BUFFER` per connection, beyond the `HEAP_RESERVE`
        // checked when the connection was taken), so with the heap short the
        // caller gets what it asked for and nothing is kept.
        let queued = s.recv_queue();
        let whole = crate::mm::heap_free() >= STASH_FLOOR;
        let take = if whole { queued } else { queued.min(max) };
        if stash.try_reserve_exact(take).is_err() {
            return Some(Err(SysError::OutOfMemory));
        }
        let reopens = 2 * queued >= SOCKET_BUFFER;
        stash.resize(take, 0);
        let got = s.recv_slice(&mut stash).unwrap_or(0);
        stash.truncate(got);
        if reopens {
            n.egress(c.id, now());
        }
    }
    if !stash.is_empty() {
        let take = max.min(stash.len());
        if take == stash.len() {
            return Some(Ok(core::mem::take(&mut *stash)));
        }
        let mut rest = Vec::new();
        if rest.try_reserve_exact(stash.len() - take).is_err() {
            return Some(Err(SysError::OutOfMemory));
        }
        rest.extend_from_slice(&stash[take..]);
        stash.truncate(take);
        return Some(Ok(core::mem::replace(&mut *stash, rest)));
    }
    drop(stash);
    let s = n.tcp(c.id);
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
    let mut n = lock(net);
    let s = n.tcp(c.id);
    if !s.may_send() {
        return Some(Err(refused(s.state())));
    }
    if data.is_empty() {
        return Some(Ok(0));
    }
    if s.can_send() {
        let sent = s.send_slice(data).unwrap_or(0);
        // Only this socket's egress: the reply leaves now, and no other
        // socket is visited.
        n.egress(c.id, now());
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
/// interrupt, the earliest socket timer, or a kick from a system call that
/// armed an earlier one.
async fn net_task() {
    let Ok(net) = net() else { return };
    loop {
        {
            let mut n = lock(net);
            // Running: a kick now is moot, the poll below sees every timer.
            NEXT_DUE.store(0, Ordering::Relaxed);
            KICKED.store(false, Ordering::SeqCst);
            if INTERRUPTED.swap(false, Ordering::SeqCst) {
                n.dev.nic.borrow_mut().ack_interrupt();
                let ctx = CLAIMED.swap(usize::MAX, Ordering::SeqCst);
                if ctx != usize::MAX {
                    if let Some(irq) = irq() {
                        crate::console::complete_irq(ctx, irq);
                    }
                }
            }
            n.poll();
            NEXT_DUE.store(n.next_due().unwrap_or(u64::MAX), Ordering::Relaxed);
        }
        core::future::poll_fn(|cx| {
            if INTERRUPTED.load(Ordering::SeqCst) || KICKED.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            // Under the waker's lock: a kick moves `NEXT_DUE` and the timer
            // together.
            let mut waker = TASK_WAKER.lock();
            let due = NEXT_DUE.load(Ordering::Relaxed);
            if due != u64::MAX {
                if arch::time() >= due {
                    return Poll::Ready(());
                }
                crate::sched::forget_wake(cx.waker());
                crate::sched::wake_at(due, cx.waker());
            }
            *waker = Some(cx.waker().clone());
            drop(waker);
            // An interrupt or a kick between the check and the store found no
            // waker.
            if INTERRUPTED.load(Ordering::SeqCst) || KICKED.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
    }
}
