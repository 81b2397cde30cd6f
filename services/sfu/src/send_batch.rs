//! Sending a worker's datagrams in batches: one `sendmmsg(2)` system call for up to
//! [`BATCH`] datagrams instead of one `sendto` each. A fanned-out frame is many
//! datagrams to many viewers at once, and the per-call cost (entry, socket lookup,
//! locking) was a share of the kernel's 39 % of the SFU's profile (docs/benchmarks.md).
//!
//! Never blocks: what the socket can't take now is dropped and counted, as a single
//! send would be (a viewer that misses a packet asks for it again).

use std::net::SocketAddr;

/// Datagrams per system call (`UIO_MAXIOV` allows 1024; 64 keeps the arrays on the
/// stack small and a flush's first packets leaving early).
pub const BATCH: usize = 64;

/// Datagrams waiting for the next [`SendBatch::flush`].
#[derive(Default)]
pub struct SendBatch {
    pending: Vec<(SocketAddr, Vec<u8>)>,
    /// Datagrams the socket refused since the worker started.
    pub dropped: u64,
    /// System calls made, for the batch-size figure of benchmarks.
    pub calls: u64,
}

impl SendBatch {
    /// Queues one datagram; sends the batch when it is full.
    pub fn push<S: std::os::fd::AsRawFd>(&mut self, socket: &S, to: SocketAddr, data: Vec<u8>) {
        self.pending.push((to, data));
        if self.pending.len() >= BATCH {
            self.flush(socket);
        }
    }

    /// Sends everything queued.
    pub fn flush<S: std::os::fd::AsRawFd>(&mut self, socket: &S) {
        let mut start = 0;
        while start < self.pending.len() {
            self.calls += 1;
            match send_many(socket.as_raw_fd(), &self.pending[start..]) {
                Ok(n) => start += n.max(1),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // The socket's send buffer is full: the rest would fail too.
                    self.dropped += (self.pending.len() - start) as u64;
                    break;
                }
                Err(_) => {
                    // This datagram's destination is refused (e.g. unreachable): skip it.
                    self.dropped += 1;
                    start += 1;
                }
            }
        }
        self.pending.clear();
    }
}

/// One `sendmmsg` of `datagrams` (at most [`BATCH`]); the number the kernel took.
#[cfg(target_os = "linux")]
fn send_many(
    fd: std::os::fd::RawFd,
    datagrams: &[(SocketAddr, Vec<u8>)],
) -> std::io::Result<usize> {
    let n = datagrams.len().min(BATCH);
    let addrs: Vec<socket2::SockAddr> = datagrams[..n]
        .iter()
        .map(|(a, _)| socket2::SockAddr::from(*a))
        .collect();
    let mut iovs: Vec<libc::iovec> = datagrams[..n]
        .iter()
        .map(|(_, d)| libc::iovec {
            iov_base: d.as_ptr() as *mut libc::c_void,
            iov_len: d.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(n);
    for (addr, iov) in addrs.iter().zip(iovs.iter_mut()) {
        // SAFETY: an all-zero msghdr is valid (no name, no control data).
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
        hdr.msg_namelen = addr.len();
        hdr.msg_iov = iov;
        hdr.msg_iovlen = 1;
        msgs.push(libc::mmsghdr {
            msg_hdr: hdr,
            msg_len: 0,
        });
    }
    // SAFETY: `msgs` points into `addrs`, `iovs` and the datagrams, all alive for the
    // call; the kernel only reads them (and writes `msg_len`).
    let sent =
        unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Elsewhere: one `sendto` per datagram.
#[cfg(not(target_os = "linux"))]
fn send_many(
    fd: std::os::fd::RawFd,
    datagrams: &[(SocketAddr, Vec<u8>)],
) -> std::io::Result<usize> {
    use std::os::fd::BorrowedFd;
    // SAFETY: the worker's socket outlives the call.
    let sock = socket2::SockRef::from(unsafe { &BorrowedFd::borrow_raw(fd) });
    let (to, data) = &datagrams[0];
    sock.send_to(data, &socket2::SockAddr::from(*to))?;
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn a_batch_reaches_every_destination_in_order() {
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let rx: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let mut b = SendBatch::default();
        for i in 0..(BATCH + 10) {
            let to = rx[i % 3].local_addr().expect("addr");
            b.push(&tx, to, vec![i as u8; 100 + i]);
        }
        b.flush(&tx);
        assert_eq!(b.dropped, 0);
        assert_eq!(b.calls, 2, "one call per {BATCH} datagrams");
        let mut buf = [0u8; 2048];
        for i in 0..(BATCH + 10) {
            let (n, _) = rx[i % 3].recv_from(&mut buf).expect("recv");
            assert_eq!(n, 100 + i);
            assert_eq!(buf[0], i as u8);
        }
    }

    #[test]
    fn an_unreachable_destination_costs_only_its_datagram() {
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut b = SendBatch::default();
        // IPv6 to an IPv4 socket: refused for this datagram only.
        b.push(&tx, "[::1]:9".parse().expect("addr"), vec![1]);
        b.push(&tx, rx.local_addr().expect("addr"), vec![2]);
        b.flush(&tx);
        assert_eq!(b.dropped, 1);
        let mut buf = [0u8; 16];
        let (n, _) = rx.recv_from(&mut buf).expect("recv");
        assert_eq!(&buf[..n], &[2]);
    }
}
