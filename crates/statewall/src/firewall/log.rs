//! The firewall's LOG events as the daemon keeps them: the latest [`LOG_KEEP`] hits for
//! the API, sequence-numbered, and a limiter that keeps the daemon's own log to
//! [`LOG_LINES_PER_SECOND`] lines a second. May import: nothing of this crate.

/// How many LOG events the daemon keeps for `GET .../log`.
pub const LOG_KEEP: usize = 4096;

/// One LOG rule hit, as the API shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LogEntry {
    /// Sequence number (from 1, per daemon run).
    pub seq: u64,
    /// Unix time it was read, seconds.
    pub time: f64,
    /// Firewall instance.
    pub firewall: String,
    /// INGRESS or EGRESS.
    pub chain: &'static str,
    /// Rule position.
    pub rule: u32,
    /// The rule's description.
    pub description: String,
    /// TCP, UDP, ICMP, ICMPv6 or the protocol number.
    pub l4proto: String,
    /// Source address.
    pub src: std::net::IpAddr,
    /// Destination address.
    pub dst: std::net::IpAddr,
    /// Source port (TCP/UDP).
    pub sport: u16,
    /// Destination port (TCP/UDP).
    pub dport: u16,
    /// TCP flags as `SYN,ACK` (TCP only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tcpflags: String,
    /// Connection state the rules saw: NEW, ESTABLISHED, RELATED, INVALID.
    pub conntrack: &'static str,
    /// Frame length.
    pub len: u32,
}

/// The latest LOG events (at most [`LOG_KEEP`]), and the log-line limiter.
#[derive(Default)]
pub struct LogRing {
    /// The kept events, oldest first.
    pub entries: std::collections::VecDeque<LogEntry>,
    seq: u64,
    second: u64,
    lines: u32,
    quiet: u64,
}

/// Log lines per second; beyond that the events are counted and still kept for the API.
pub const LOG_LINES_PER_SECOND: u32 = 100;

/// TCP flags as `SYN,ACK`.
pub fn tcp_flag_names(f: u8) -> String {
    let names = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
    (0..8)
        .filter(|i| f & (1 << i) != 0)
        .map(|i| names[i])
        .collect::<Vec<_>>()
        .join(",")
}

impl LogRing {
    /// Keeps `entry` (giving it the next sequence number) and says whether it may be
    /// written to the log at Unix second `now`; the first event of a new second reports
    /// how many the last one kept quiet.
    pub fn record(&mut self, entry: &mut LogEntry, now: u64) -> bool {
        self.seq += 1;
        entry.seq = self.seq;
        if self.entries.len() >= LOG_KEEP {
            self.entries.pop_front();
        }
        self.entries.push_back(entry.clone());
        if now != self.second {
            if self.quiet > 0 {
                tracing::info!(
                    "firewall log: {} more events in the last second (see GET .../log)",
                    self.quiet
                );
            }
            self.second = now;
            self.lines = 0;
            self.quiet = 0;
        }
        self.lines += 1;
        let loud = self.lines <= LOG_LINES_PER_SECOND;
        if !loud {
            self.quiet += 1;
        }
        loud
    }
}
