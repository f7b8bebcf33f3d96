//! Per-interface traffic counters of a pod's network namespace, for PodSandboxStats (the
//! kubelet's summary API: `pods[].network`).

/// Counters of one interface.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InterfaceUsage {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Packets dropped while receiving.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Packets dropped while transmitting.
    pub tx_dropped: u64,
}

/// The most of `/proc/<pid>/net/dev` that is read: a line is about 200 bytes, so this is
/// far more interfaces than a pod has, and bounds what a namespace full of devices costs.
const MAX_NET_DEV: u64 = 256 << 10;

/// Interfaces kept per namespace.
pub const MAX_INTERFACES: usize = 256;

/// Parses `/proc/<pid>/net/dev` (two header lines, then `name: rx_bytes rx_packets rx_errs
/// rx_drop ... tx_bytes tx_packets tx_errs tx_drop ...`), leaving out the loopback device and
/// keeping at most [`MAX_INTERFACES`].
pub fn parse_net_dev(text: &str) -> Vec<InterfaceUsage> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim();
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            (name != "lo" && f.len() >= 16).then(|| InterfaceUsage {
                name: name.to_owned(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            })
        })
        .take(MAX_INTERFACES)
        .collect()
}

/// The interfaces of the network namespace process `pid` lives in. At most the first
/// 256 KiB of the file are read.
pub fn of_process(pid: i32) -> std::io::Result<Vec<InterfaceUsage>> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(format!("/proc/{pid}/net/dev"))?
        .take(MAX_NET_DEV)
        .read_to_string(&mut text)?;
    Ok(parse_net_dev(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_dev_without_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0:   12345      67    1    0    0     0          0         0     8910      11    2    0    0     0       0          0
";
        assert_eq!(
            parse_net_dev(text),
            vec![InterfaceUsage {
                name: "eth0".into(),
                rx_bytes: 12345,
                rx_packets: 67,
                rx_errors: 1,
                rx_dropped: 0,
                tx_bytes: 8910,
                tx_packets: 11,
                tx_errors: 2,
                tx_dropped: 0,
            }]
        );
        assert!(parse_net_dev("").is_empty());
        assert!(parse_net_dev("a\nb\n  eth0: x y\n").is_empty());
    }

    #[test]
    fn many_interfaces_are_capped() {
        let mut text = String::from("h1\nh2\n");
        for i in 0..MAX_INTERFACES + 10 {
            text.push_str(&format!("veth{i}: {}\n", ["1"; 16].join(" ")));
        }
        assert_eq!(parse_net_dev(&text).len(), MAX_INTERFACES);
    }

    #[test]
    fn own_namespace_is_readable() {
        of_process(std::process::id() as i32).unwrap();
    }
}
