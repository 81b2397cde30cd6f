//! Sending a worker's datagrams in batches, with as few trips through the kernel's UDP
//! stack as it allows. The kernel's send path was the largest share of the SFU's profile
//! (39 %, docs/benchmarks.md), paid per datagram; a fanned-out frame is a run of
//! datagrams to each viewer, most of them the same size (FU-A fragments).
//!
//! - Consecutive datagrams to one destination whose sizes allow it become one
//!   generic-segmentation send (`UDP_SEGMENT`, Linux ≥ 4.18): the stack is walked once
//!   and the datagram split at the end, as QUIC servers do.
//! - Up to [`BATCH`] such sends go in one `sendmmsg(2)` call.
//!
//! Never blocks: what the socket can't take now is dropped and counted, as a single
//! send would be (a viewer that misses a packet asks for it again).

use std::net::SocketAddr;

/// Sends per system call.
pub const BATCH: usize = 64;
/// Datagrams in one segmented send (the kernel's `UDP_MAX_SEGMENTS`).
const MAX_SEGMENTS: usize = 64;
/// Bytes in one segmented send (an IP packet's limit, less headers).
const MAX_GSO_BYTES: usize = 65_000;

/// One send: `count` datagrams of `seg` bytes (the last may be shorter) to `to`, the
/// queued datagrams `first..first + count`. A segmented send's datagrams stay where str0m
/// wrote them, one `iovec` each: the kernel reads them as one buffer, so they are never
/// copied into one (that copy, and the reallocations growing it, were ~3 % of a loaded
/// worker's CPU).
struct Send {
    to: SocketAddr,
    first: usize,
    seg: usize,
    count: usize,
    /// Bytes in all its datagrams.
    len: usize,
    /// Its last datagram is shorter than `seg`: nothing more can join.
    closed: bool,
}

impl Send {
    /// Whether `len` more bytes to the same destination can join this send.
    fn takes(&self, len: usize) -> bool {
        !self.closed
            && len <= self.seg
            && len > 0
            && self.count < MAX_SEGMENTS
            && self.len + len <= MAX_GSO_BYTES
    }
}

/// Datagrams waiting for the next [`SendBatch::flush`].
pub struct SendBatch {
    /// Every queued datagram, in order; sends refer to runs of them.
    datagrams: Vec<Vec<u8>>,
    pending: Vec<Send>,
    /// Segmented sends; off where the kernel refuses them.
    gso: bool,
    /// Datagrams the socket refused since the worker started.
    pub dropped: u64,
    /// Datagrams handed to the kernel and system calls made, for benchmarks.
    pub sent: u64,
    pub calls: u64,
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new(cfg!(target_os = "linux"))
    }
}

impl SendBatch {
    /// `gso`: coalesce runs to one destination into segmented sends.
    pub fn new(gso: bool) -> Self {
        Self {
            datagrams: Vec::new(),
            pending: Vec::new(),
            gso,
            dropped: 0,
            sent: 0,
            calls: 0,
        }
    }

    /// Queues one datagram; sends the batch when it is full.
    pub fn push<S: std::os::fd::AsRawFd>(&mut self, socket: &S, to: SocketAddr, data: Vec<u8>) {
        let len = data.len();
        if self.gso {
            if let Some(last) = self.pending.last_mut() {
                if last.to == to && last.takes(len) {
                    last.count += 1;
                    last.len += len;
                    last.closed = len < last.seg;
                    self.datagrams.push(data);
                    return;
                }
            }
        }
        if self.pending.len() >= BATCH {
            self.flush(socket);
        }
        self.pending.push(Send {
            to,
            first: self.datagrams.len(),
            seg: len,
            count: 1,
            len,
            closed: false,
        });
        self.datagrams.push(data);
    }

    /// Sends everything queued.
    pub fn flush<S: std::os::fd::AsRawFd>(&mut self, socket: &S) {
        let mut start = 0;
        while start < self.pending.len() {
            self.calls += 1;
            match send_many(socket.as_raw_fd(), &self.pending[start..], &self.datagrams) {
                Ok(n) => {
                    let n = n.max(1);
                    self.sent += self.pending[start..start + n]
                        .iter()
                        .map(|s| s.count as u64)
                        .sum::<u64>();
                    start += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // The socket's send buffer is full: the rest would fail too.
                    self.dropped += self.pending[start..]
                        .iter()
                        .map(|s| s.count as u64)
                        .sum::<u64>();
                    break;
                }
                Err(e) => {
                    let s = &self.pending[start];
                    if s.count > 1 && matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) {
                        // No segmentation offload here (or not for this route): one by one.
                        tracing::warn!(error = %e, "UDP segmentation offload refused; sending datagrams one by one");
                        self.gso = false;
                        let to = s.to;
                        let unsplit: Vec<Send> = (s.first..s.first + s.count)
                            .map(|i| {
                                let len = self.datagrams[i].len();
                                Send {
                                    to,
                                    first: i,
                                    seg: len,
                                    count: 1,
                                    len,
                                    closed: false,
                                }
                            })
                            .collect();
                        self.pending.splice(start..=start, unsplit);
                        continue;
                    }
                    // This destination is refused (e.g. unreachable): skip it.
                    self.dropped += s.count as u64;
                    start += 1;
                }
            }
        }
        self.pending.clear();
        self.datagrams.clear();
    }
}

/// One `sendmmsg` of `sends` (at most [`BATCH`]); the number of sends the kernel took.
#[cfg(target_os = "linux")]
fn send_many(
    fd: std::os::fd::RawFd,
    sends: &[Send],
    datagrams: &[Vec<u8>],
) -> std::io::Result<usize> {
    /// Room for one `cmsghdr` carrying a u16, 8-byte aligned.
    #[repr(C, align(8))]
    struct Cmsg([u8; 32]);

    let n = sends.len().min(BATCH);
    let addrs: Vec<socket2::SockAddr> = sends[..n]
        .iter()
        .map(|s| socket2::SockAddr::from(s.to))
        .collect();
    // One iovec per datagram; a send's are consecutive from `sends[i].first`.
    let first = sends[0].first;
    let mut iovs: Vec<libc::iovec> = sends[..n]
        .iter()
        .flat_map(|s| &datagrams[s.first..s.first + s.count])
        .map(|d| libc::iovec {
            iov_base: d.as_ptr() as *mut libc::c_void,
            iov_len: d.len(),
        })
        .collect();
    let mut cmsgs: Vec<Cmsg> = (0..n).map(|_| Cmsg([0; 32])).collect();
    let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(n);
    for (i, addr) in addrs.iter().enumerate() {
        // SAFETY: an all-zero msghdr is valid (no name, no control data).
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
        hdr.msg_namelen = addr.len();
        hdr.msg_iov = iovs[sends[i].first - first..].as_mut_ptr();
        hdr.msg_iovlen = sends[i].count as _;
        if sends[i].count > 1 {
            let seg = sends[i].seg as u16;
            let space = std::mem::size_of::<u16>() as libc::c_uint;
            hdr.msg_control = cmsgs[i].0.as_mut_ptr() as *mut libc::c_void;
            // SAFETY: CMSG_SPACE(2) is 24 on 64-bit Linux, within the 32-byte buffer.
            hdr.msg_controllen = unsafe { libc::CMSG_SPACE(space) } as _;
            // SAFETY: the control buffer is large enough and aligned for one cmsghdr.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&hdr);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = libc::UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(space) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, seg);
            }
        }
        msgs.push(libc::mmsghdr {
            msg_hdr: hdr,
            msg_len: 0,
        });
    }
    // SAFETY: `msgs` points into `addrs`, `iovs`, `cmsgs` and the datagrams, all alive for
    // the call; the kernel only reads them (and writes `msg_len`).
    let sent =
        unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Elsewhere: one `sendto` per datagram (segmented sends are never built there).
#[cfg(not(target_os = "linux"))]
fn send_many(
    fd: std::os::fd::RawFd,
    sends: &[Send],
    datagrams: &[Vec<u8>],
) -> std::io::Result<usize> {
    use std::os::fd::BorrowedFd;
    // SAFETY: the worker's socket outlives the call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&fd);
    sock.send_to(
        &datagrams[sends[0].first],
        &socket2::SockAddr::from(sends[0].to),
    )?;
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn recv_all(rx: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = [0u8; 2048];
        (0..n)
            .map(|_| {
                let (len, _) = rx.recv_from(&mut buf).expect("recv");
                buf[..len].to_vec()
            })
            .collect()
    }

    #[test]
    fn runs_to_one_viewer_arrive_as_the_datagrams_they_were() {
        for gso in [true, false] {
            let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let rx: Vec<UdpSocket> = (0..3)
                .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
                .collect();
            let mut b = SendBatch::new(gso);
            // Per viewer, a frame: four full fragments and a short last one; then audio.
            let mut want: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 3];
            // Few enough to fit the receivers' default buffers.
            for frame in 0..8u8 {
                for (v, r) in rx.iter().enumerate() {
                    let to = r.local_addr().expect("addr");
                    for i in 0..5u8 {
                        let len = if i == 4 { 300 } else { 1100 };
                        let d = vec![frame ^ i ^ v as u8; len];
                        want[v].push(d.clone());
                        b.push(&tx, to, d);
                    }
                    let audio = vec![frame; 90];
                    want[v].push(audio.clone());
                    b.push(&tx, to, audio);
                }
            }
            b.flush(&tx);
            assert_eq!(b.dropped, 0);
            assert_eq!(b.sent, 8 * 3 * 6);
            for (v, r) in rx.iter().enumerate() {
                assert_eq!(recv_all(r, want[v].len()), want[v], "gso {gso}");
            }
            if gso {
                assert!(b.calls <= 2, "{} calls for 24 frames to 3 viewers", b.calls);
            }
        }
    }

    #[test]
    fn a_short_datagram_ends_its_run() {
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        let mut b = SendBatch::new(true);
        // Two full, a short one closing the run, then two more of the short size: the
        // kernel cuts a run at its first size, so they must start a run of their own.
        let want: Vec<Vec<u8>> = [1100, 1100, 300, 300, 300]
            .iter()
            .enumerate()
            .map(|(i, &len)| vec![i as u8; len])
            .collect();
        for d in &want {
            b.push(&tx, to, d.clone());
        }
        assert_eq!(b.pending.len(), 2);
        b.flush(&tx);
        assert_eq!((b.dropped, b.sent), (0, 5));
        assert_eq!(recv_all(&rx, want.len()), want);
    }

    #[test]
    fn an_unreachable_destination_costs_only_its_datagrams() {
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut b = SendBatch::default();
        // IPv6 to an IPv4 socket: refused for this destination only.
        b.push(&tx, "[::1]:9".parse().expect("addr"), vec![1; 100]);
        b.push(&tx, "[::1]:9".parse().expect("addr"), vec![1; 100]);
        b.push(&tx, rx.local_addr().expect("addr"), vec![2]);
        b.flush(&tx);
        assert_eq!(b.dropped, 2);
        assert_eq!(recv_all(&rx, 1), vec![vec![2]]);
    }
}
