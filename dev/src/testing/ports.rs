//! Ports on 127.0.0.1 for the servers a test starts, handed out so that concurrent tests and
//! the kernel's own outgoing connections never collide with them.

use std::net::TcpListener;

/// A port on 127.0.0.1 for a server that a test starts, checked free by binding it.
pub fn free_port() -> u16 {
    free_port_block(1)
}

/// `n` consecutive free ports on 127.0.0.1 (pods whose URLs are `{ordinal+BASE}`), the first
/// of them returned.
///
/// A port taken from the kernel's ephemeral range could be handed to any outgoing connection
/// between this check and the server's bind. These come from below that range, which the
/// kernel never assigns by itself, from a block of ports of this process's own (cargo runs
/// test binaries one at a time; the block keeps concurrent ones apart too). A run of ports is
/// reserved with one atomic step, so tests running on other threads of this process cannot
/// interleave with it, and no port is handed out twice until the block wraps.
pub fn free_port_block(n: u16) -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const FIRST: u32 = 10_000;
    const BLOCK: u32 = 500;
    let n = u32::from(n).max(1);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .max(FIRST + BLOCK);
    let blocks = (ephemeral_start - FIRST) / BLOCK;
    let base = FIRST + (std::process::id() % blocks) * BLOCK;
    for _ in 0..BLOCK {
        let start = NEXT.fetch_add(n, std::sync::atomic::Ordering::Relaxed) % BLOCK;
        if start + n > BLOCK {
            continue; // a run may not wrap around the block's end
        }
        let first = base + start;
        if (first..first + n).all(|port| TcpListener::bind(("127.0.0.1", port as u16)).is_ok()) {
            return first as u16;
        }
    }
    panic!(
        "no {n} consecutive free ports in 127.0.0.1:{base}..{}",
        base + BLOCK
    );
}

#[cfg(test)]
mod tests {
    use super::free_port_block;

    /// Tests of one binary run on several threads; their port runs must never overlap.
    #[test]
    fn concurrent_port_runs_are_disjoint_and_consecutive() {
        let threads: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(|| (0..20).map(|_| free_port_block(3)).collect::<Vec<_>>()))
            .collect();
        let mut ports = std::collections::HashSet::new();
        for thread in threads {
            for first in thread.join().expect("a port thread panicked") {
                for port in first..first + 3 {
                    assert!(ports.insert(port), "port {port} handed out twice");
                }
            }
        }
        assert_eq!(ports.len(), 8 * 20 * 3);
    }
}
