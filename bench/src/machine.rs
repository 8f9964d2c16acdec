//! What machine a benchmark ran on, as one line for the top of a report.
//!
//! Read from Linux's `/proc` (CPU model, processors, memory, kernel) and from
//! what `build.rs` captured (compiler, profile). Every field degrades to `?`
//! rather than failing: a report from a machine without `/proc` still runs.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A description of the machine and build.
#[derive(Clone, Debug)]
pub struct Machine {
    /// CPU model name (`model name` in `/proc/cpuinfo`, or the ISA elsewhere).
    pub cpu: String,
    /// Whether the CPU flags say we run under a hypervisor.
    pub virtualised: bool,
    /// Logical processors this process may use.
    pub cores: usize,
    /// Total memory in GiB.
    pub mem_gib: Option<f64>,
    /// Kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// `rustc --version` of the compiler that built this binary.
    pub rustc: &'static str,
    /// Cargo profile of this binary (`release`, `debug`).
    pub profile: &'static str,
    /// UTC date and time the report was made, `YYYY-MM-DD HH:MM UTC`.
    pub date: String,
}

impl Machine {
    /// Describes the machine this process runs on.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = ["model name", "uarch", "isa", "Hardware"]
            .iter()
            .find_map(|key| cpuinfo_field(&cpuinfo, key))
            .unwrap_or_else(|| "?".to_owned());
        let virtualised = cpuinfo_field(&cpuinfo, "flags")
            .is_some_and(|f| f.split_whitespace().any(|x| x == "hypervisor"));
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mem_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map(|kib| kib / (1024.0 * 1024.0));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "?".to_owned());
        Machine {
            cpu,
            virtualised,
            cores,
            mem_gib,
            kernel,
            rustc: env!("SS_BENCH_RUSTC"),
            profile: env!("SS_BENCH_PROFILE"),
            date: utc_now(),
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "machine: {}", self.cpu)?;
        if self.virtualised {
            f.write_str(" (virtualised)")?;
        }
        write!(f, " | {} cores", self.cores)?;
        match self.mem_gib {
            Some(g) => write!(f, " | {g:.1} GiB")?,
            None => f.write_str(" | ? GiB")?,
        }
        write!(
            f,
            " | Linux {} | {} ({}) | {}",
            self.kernel, self.rustc, self.profile, self.date
        )
    }
}

/// The value of the first `key : value` line of `/proc/cpuinfo`.
fn cpuinfo_field(cpuinfo: &str, key: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

/// Now, as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        s / 3600,
        s / 60 % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), by the
/// era arithmetic of H. Hinnant's "chrono-Compatible Low-Level Date Algorithms".
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1st
    let mp = (5 * doy + 2) / 153; // March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn cpuinfo() {
        let info = "processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\nflags\t: fpu hypervisor\n";
        assert_eq!(
            cpuinfo_field(info, "model name").as_deref(),
            Some("Some CPU @ 2.0GHz")
        );
        assert_eq!(cpuinfo_field(info, "uarch"), None);
    }
}
