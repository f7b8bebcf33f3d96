//! Per-interface traffic counters of a pod's network namespace, for PodSandboxStats (the
//! kubelet's summary API: `pods[].network`).

/// Counters of one interface.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InterfaceUsage {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Transmit errors.
    pub tx_errors: u64,
}

/// Parses `/proc/<pid>/net/dev` (two header lines, then `name: rx_bytes rx_packets rx_errs
/// ... tx_bytes tx_packets tx_errs ...`), leaving out the loopback device.
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
                rx_errors: f[2],
                tx_bytes: f[8],
                tx_errors: f[10],
            })
        })
        .collect()
}

/// The interfaces of the network namespace process `pid` lives in.
pub fn of_process(pid: i32) -> std::io::Result<Vec<InterfaceUsage>> {
    Ok(parse_net_dev(&std::fs::read_to_string(format!(
        "/proc/{pid}/net/dev"
    ))?))
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
                rx_errors: 1,
                tx_bytes: 8910,
                tx_errors: 2,
            }]
        );
        assert!(parse_net_dev("").is_empty());
        assert!(parse_net_dev("a\nb\n  eth0: x y\n").is_empty());
    }

    #[test]
    fn own_namespace_is_readable() {
        of_process(std::process::id() as i32).unwrap();
    }
}
