//! CPU time and memory of the processes under test, read from `/proc`.
//!
//! CPU is `utime + stime` of each process (all its threads), in clock ticks
//! of 1/100 s (`CLK_TCK` is 100 on Linux x86-64 and arm64). A sampler thread
//! reads every watched process every 100 ms, so PostgreSQL backends that
//! come and go during a phase are still counted, and memory peaks are seen.
//! Children's `cutime` is deliberately not used: the postmaster's includes
//! every backend of every other database on the server.

use std::{
    collections::HashMap,
    fs,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` times.
pub const CLK_TCK: f64 = 100.0;

/// `utime + stime` of a process, in ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields start after the last ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    // After the name: state(0) ppid(1) … utime(11) stime(12).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `/proc/<pid>/status` memory field (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// The process name (at most 15 characters).
pub fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim_end().to_owned())
}

/// The command line, arguments joined by spaces (PostgreSQL rewrites it into a status title).
pub fn cmdline(pid: u32) -> Option<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " ").trim_end().to_owned())
}

/// Every process id on the machine.
pub fn all_pids() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Processes whose name starts with `prefix` (names are cut at 15 characters:
/// `webhooks-dispatcher` shows as `webhooks-dispat`).
pub fn find_by_name(prefix: &str) -> Vec<u32> {
    let prefix: String = prefix.chars().take(15).collect();
    all_pids().into_iter().filter(|&pid| comm(pid).is_some_and(|c| c.starts_with(&prefix))).collect()
}

/// The process listening on TCP `port` (IPv4 or IPv6), found through the
/// socket's inode in `/proc/net/tcp*` and the processes' open descriptors.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    const LISTEN: &str = "0A";
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|table| {
        let text = fs::read_to_string(table).ok()?;
        text.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit_once(':')?.1;
            let listening = fields.get(3) == Some(&LISTEN);
            (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| fields.get(9).map(|s| s.to_string()))?
        })
    })?;
    let socket = format!("socket:[{inode}]");
    all_pids().into_iter().find(|pid| {
        fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.filter_map(Result::ok)
                .any(|fd| fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == socket.as_str()))
        })
    })
}

/// Busy ticks of the whole machine (all CPUs) from `/proc/stat`.
pub fn machine_busy_ticks() -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
    Some(v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7).unwrap_or(&0))
}

/// Which processes to measure.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    pub ingest: Vec<u32>,
    pub dispatcher: Vec<u32>,
    /// Count only the PostgreSQL backends of this database (plus the shared
    /// background processes); all backends when `None`.
    pub database_name: Option<String>,
}

/// CPU seconds spent during a phase, per process group.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuSeconds {
    /// `None` when the process is not known (services started in-process).
    pub ingest: Option<f64>,
    pub dispatcher: Option<f64>,
    pub postgres: f64,
    pub rabbitmq: f64,
    /// The harness itself (publisher and receiver).
    pub bench: f64,
    /// Every CPU of the machine, busy time (includes anything else running).
    pub machine: f64,
}

impl CpuSeconds {
    /// What the services cost: ingest + dispatcher + PostgreSQL + RabbitMQ.
    pub fn services(&self) -> f64 {
        self.ingest.unwrap_or(0.0) + self.dispatcher.unwrap_or(0.0) + self.postgres + self.rabbitmq
    }
}

/// What the sampler saw during a phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    pub cpu: CpuSeconds,
    /// Highest sampled `VmRSS` of ingest, MiB.
    pub ingest_rss_peak_mib: Option<f64>,
    /// Highest sampled `VmRSS` of any one dispatcher, MiB.
    pub dispatcher_rss_peak_mib: Option<f64>,
    /// `VmHWM` (lifetime peak RSS) at the end of the phase, MiB.
    pub ingest_hwm_mib: Option<f64>,
    pub dispatcher_hwm_mib: Option<f64>,
    pub samples: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Group {
    Ingest,
    Dispatcher,
    Postgres,
    Rabbitmq,
    Bench,
}

/// Ticks of one group: per process, the reading at start (0 for processes
/// born later) and the latest reading.
#[derive(Default)]
struct GroupTicks {
    processes: HashMap<u32, (u64, u64)>,
    /// Ticks of processes whose pid was reused meanwhile.
    retired: u64,
}

impl GroupTicks {
    fn record(&mut self, pid: u32, ticks: u64, initial: bool) {
        let entry = self.processes.entry(pid).or_insert((if initial { ticks } else { 0 }, ticks));
        if ticks < entry.1 {
            // Same pid, new process.
            self.retired += entry.1 - entry.0;
            *entry = (0, ticks);
        } else {
            entry.1 = ticks;
        }
    }

    fn seconds(&self) -> f64 {
        let ticks: u64 = self.processes.values().map(|(first, last)| last - first).sum::<u64>() + self.retired;
        ticks as f64 / CLK_TCK
    }
}

struct State {
    watch: Watch,
    groups: HashMap<Group, GroupTicks>,
    machine_start: Option<u64>,
    machine_last: Option<u64>,
    ingest_rss_kib: Option<u64>,
    dispatcher_rss_kib: Option<u64>,
    samples: usize,
}

impl State {
    fn sample(&mut self, initial: bool) {
        let me = std::process::id();
        let mut readings: Vec<(Group, u32, u64)> = Vec::new();
        for &pid in &self.watch.ingest {
            if let Some(t) = cpu_ticks(pid) {
                readings.push((Group::Ingest, pid, t));
            }
            if let Some(rss) = status_kib(pid, "VmRSS") {
                self.ingest_rss_kib = Some(self.ingest_rss_kib.unwrap_or(0).max(rss));
            }
        }
        for &pid in &self.watch.dispatcher {
            if let Some(t) = cpu_ticks(pid) {
                readings.push((Group::Dispatcher, pid, t));
            }
            if let Some(rss) = status_kib(pid, "VmRSS") {
                self.dispatcher_rss_kib = Some(self.dispatcher_rss_kib.unwrap_or(0).max(rss));
            }
        }
        if let Some(t) = cpu_ticks(me) {
            readings.push((Group::Bench, me, t));
        }
        for pid in all_pids() {
            let group = match comm(pid).as_deref() {
                Some("postgres") if self.counts_postgres(pid) => Group::Postgres,
                Some("beam.smp" | "erl_child_setup" | "inet_gethost" | "epmd") => Group::Rabbitmq,
                _ => continue,
            };
            if let Some(t) = cpu_ticks(pid) {
                readings.push((group, pid, t));
            }
        }
        for (group, pid, ticks) in readings {
            self.groups.entry(group).or_default().record(pid, ticks, initial);
        }
        let machine = machine_busy_ticks();
        if initial {
            self.machine_start = machine;
        }
        self.machine_last = machine.or(self.machine_last);
        self.samples += 1;
    }

    /// Our database's backends and the server's shared background processes.
    fn counts_postgres(&self, pid: u32) -> bool {
        let Some(database) = &self.watch.database_name else { return true };
        let Some(title) = cmdline(pid) else { return false };
        // A client backend's title is "postgres: [<cluster>: ]<user> <database> <host>(<port>) <state>".
        let is_client_backend = title.contains('(') || title.contains("[local]");
        !is_client_backend || title.split_whitespace().any(|word| word == database)
    }

    fn usage(&self) -> Usage {
        let seconds = |g: Group| self.groups.get(&g).map_or(0.0, GroupTicks::seconds);
        let mib = |kib: u64| kib as f64 / 1024.0;
        let hwm = |pids: &[u32]| pids.iter().filter_map(|&p| status_kib(p, "VmHWM")).max().map(mib);
        Usage {
            cpu: CpuSeconds {
                ingest: (!self.watch.ingest.is_empty()).then(|| seconds(Group::Ingest)),
                dispatcher: (!self.watch.dispatcher.is_empty()).then(|| seconds(Group::Dispatcher)),
                postgres: seconds(Group::Postgres),
                rabbitmq: seconds(Group::Rabbitmq),
                bench: seconds(Group::Bench),
                machine: match (self.machine_start, self.machine_last) {
                    (Some(a), Some(b)) => b.saturating_sub(a) as f64 / CLK_TCK,
                    _ => 0.0,
                },
            },
            ingest_rss_peak_mib: self.ingest_rss_kib.map(mib),
            dispatcher_rss_peak_mib: self.dispatcher_rss_kib.map(mib),
            ingest_hwm_mib: hwm(&self.watch.ingest),
            dispatcher_hwm_mib: hwm(&self.watch.dispatcher),
            samples: self.samples,
        }
    }
}

/// Samples the watched processes on a thread of its own until [`Sampler::finish`].
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Usage>,
}

impl Sampler {
    /// Takes the starting readings now, then samples every `every`.
    pub fn start(watch: Watch, every: Duration) -> Self {
        let mut state = State {
            watch,
            groups: HashMap::new(),
            machine_start: None,
            machine_last: None,
            ingest_rss_kib: None,
            dispatcher_rss_kib: None,
            samples: 0,
        };
        state.sample(true);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop_flag.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                state.sample(false);
            }
            state.usage()
        });
        Self { stop, thread }
    }

    /// Takes a last reading and returns the totals.
    pub fn finish(self) -> Usage {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let me = std::process::id();
        let start = cpu_ticks(me).expect("own stat");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_ticks(me).expect("own stat") >= start);
        assert!(status_kib(me, "VmRSS").expect("rss") > 0);
        assert!(machine_busy_ticks().is_some());
        assert!(all_pids().contains(&me));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert_eq!(pid_listening_on(port), Some(me));
    }
}
