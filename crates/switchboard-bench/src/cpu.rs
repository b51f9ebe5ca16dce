//! CPU time of a process or thread, from `/proc/PID/stat`.

use std::time::Duration;

/// User + system CPU time of `pid` (or this process).
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    stat_cpu_time(&path)
}

/// User + system CPU time of the calling thread.
pub fn thread_cpu_time() -> Option<Duration> {
    stat_cpu_time("/proc/thread-self/stat")
}

fn stat_cpu_time(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / clock_ticks(),
    ))
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux architecture this runs on.
    100.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_its_own_cpu_time() {
        assert!(super::cpu_time(None).is_some());
    }

    #[test]
    fn a_busy_thread_accrues_cpu_time() {
        // Spin until the thread's own clock shows 100 ms (ticks are 10 ms):
        // on a loaded machine that takes longer than 100 ms of wall time,
        // but it must come, and the clock must never run backwards.
        let start = super::thread_cpu_time().expect("thread stat");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut spins = 0u64;
        loop {
            for _ in 0..100_000 {
                spins = std::hint::black_box(spins + 1);
            }
            let spent = super::thread_cpu_time().expect("thread stat") - start;
            if spent >= std::time::Duration::from_millis(100) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "30 s of spinning showed only {spent:?} of cpu time"
            );
        }
    }
}
