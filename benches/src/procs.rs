//! The processes under test: starting them pinned to a core, reading their CPU time and memory
//! from /proc, and stopping them. Every figure of a proxy comes from here, so that nginx,
//! haproxy, the floor and splpd are measured the same way.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

/// The core the proxy under test runs on; the load generator and the upstream run on the other.
pub(crate) const PROXY_CORE: usize = 0;
/// The core of the load generator and the upstream.
pub(crate) const LOAD_CORE: usize = 1;

const TASKSET: &str = "/usr/bin/taskset";

/// Whether processes can be pinned (util-linux `taskset` present and two cores to pin to).
pub(crate) fn can_pin() -> bool {
    Path::new(TASKSET).exists() && online_cores() >= 2
}

/// Cores the machine has online, whatever this process is pinned to (`available_parallelism`
/// counts only the cores this process may use, one once it has pinned itself).
pub(crate) fn online_cores() -> usize {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo.lines().filter(|l| l.starts_with("processor")).count().max(1)
}

/// Pins the calling process (its threads created from now on) to `core`.
pub(crate) fn pin_self(core: usize) {
    if can_pin() {
        let _ = Command::new(TASKSET)
            .args(["-p", "-c", &core.to_string(), &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
}

/// A command run on the proxy core: `taskset -c 0 program args…` when pinning is possible.
pub(crate) fn pinned_command(program: &Path) -> Command {
    if can_pin() {
        let mut c = Command::new(TASKSET);
        c.arg("-c").arg(PROXY_CORE.to_string()).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A started process, killed when dropped so that a failed run leaves nothing behind.
#[derive(Debug)]
pub(crate) struct Proc {
    pub(crate) name: String,
    child: Child,
}

impl Proc {
    /// Starts `cmd` with its standard output and error going to `log`.
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Self { name: name.to_owned(), child })
    }

    /// The process id (taskset execs the program, so it is the program's).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has already exited, with its exit status.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => anyhow::bail!("{} exited ({status})", self.name),
        }
    }

    /// Resident memory in KiB.
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system, all threads, including exited ones) of a process, from
/// `/proc/PID/stat`.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    parse_stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU seconds of the threads of a process named `name` (their `comm`), summed; `None` when
/// the process has no such thread.
pub(crate) fn thread_cpu_seconds(pid: u32, name: &str) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = None;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        if let Some(cpu) = std::fs::read_to_string(task.path().join("stat")).ok().as_deref().and_then(parse_stat_cpu) {
            *total.get_or_insert(0.0) += cpu;
        }
    }
    total
}

fn parse_stat_cpu(stat: &str) -> Option<f64> {
    // The command name may hold spaces and parentheses; the fields after its last ')' do not.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux architecture splpd targets.
    Some((utime + stime) / 100.0)
}

/// Resident set size in KiB, from `VmRSS` of `/proc/PID/status`.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    parse_status_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Waits until something accepts TCP connections on `addr`, or fails after `limit`.
pub(crate) async fn wait_listening(proc: &mut Proc, addr: std::net::SocketAddr, limit: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        proc.check_alive()?;
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{} did not start listening on {addr} within {limit:?}", proc.name);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The open-file limit processes started from here get (`Max open files` of /proc/self/limits).
pub(crate) fn fd_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// How many client connections a proxy may hold here: haproxy needs two descriptors for each.
pub(crate) fn max_connections() -> u64 {
    (fd_limit().saturating_sub(200) / 2).clamp(100, 40_000)
}

/// A free loopback port (bound and released; the proxy binds it right after).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_a_command_name_with_spaces_and_parentheses() {
        // Fields 14 and 15 (utime, stime) are 250 and 50 ticks.
        let stat = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 1000 10";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
    }

    #[test]
    fn thread_cpu_is_that_of_the_named_threads_only() {
        // A thread that burns about 300 ms of CPU, then waits to be looked at.
        let (burnt_tx, burnt) = std::sync::mpsc::channel();
        let (done, done_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::Builder::new()
            .name("cpu-probe".to_owned())
            .spawn(move || {
                let start = std::time::Instant::now();
                let mut x = 0u64;
                while start.elapsed() < std::time::Duration::from_millis(300) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
                burnt_tx.send(x).unwrap();
                let _ = done_rx.recv();
            })
            .unwrap();
        burnt.recv().unwrap();
        let pid = std::process::id();
        let probe = thread_cpu_seconds(pid, "cpu-probe").unwrap();
        // Ticks of 10 ms; a loaded machine may give the thread less than its wall time.
        assert!(probe >= 0.05, "{probe}");
        assert!(probe <= cpu_seconds(pid).unwrap());
        assert_eq!(thread_cpu_seconds(pid, "no-such-thread"), None);
        done.send(()).unwrap();
        worker.join().unwrap();
    }

    #[test]
    fn rss_is_read_from_the_vmrss_line() {
        let status = "Name:\tnginx\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t1\n";
        assert_eq!(parse_status_rss(status), Some(5120));
        assert_eq!(parse_status_rss("Name:\tx\n"), None);
    }
}
