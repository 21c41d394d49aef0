//! The CPU a process runs on, as run reports, `doctor` and every benchmark figure record it:
//! model, vendor, the widest SIMD the CPU kernels can use, and the topology (sockets, cores,
//! threads per core), so that a speed figure always says which host type it was measured on.

use serde::Serialize;

/// What `/proc/cpuinfo` and the CPU's feature flags say about this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostCpu {
    /// `model name` ("AMD EPYC", "Intel(R) Xeon(R) Processor"), else the architecture.
    pub model: String,
    /// `vendor_id` ("AuthenticAMD", "GenuineIntel"), empty when unknown.
    pub vendor: String,
    /// The widest SIMD level: "AVX-512" (with "+VNNI", "+BF16" when present), "AVX2+FMA",
    /// "SSE4.2", else the architecture.
    pub isa: String,
    /// Logical CPUs the OS lists.
    pub logical_cpus: usize,
    /// Physical packages (`physical id` values).
    pub sockets: usize,
    /// Hardware threads per core (`siblings` / `cpu cores`): 2 when hyper-threads are listed.
    pub threads_per_core: usize,
    /// CPUs this process may use (affinity, cgroup quota).
    pub usable_cpus: usize,
}

impl HostCpu {
    /// This host.
    pub fn detect() -> HostCpu {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let mut host = HostCpu::from_cpuinfo(&info);
        host.isa = isa();
        host.usable_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        host
    }

    /// The fields `/proc/cpuinfo`'s text gives (ISA and usable CPUs left unknown).
    pub fn from_cpuinfo(text: &str) -> HostCpu {
        let field = |name: &str| {
            text.lines().find_map(|l| {
                let (key, value) = l.split_once(':')?;
                (key.trim() == name).then(|| value.trim().to_string())
            })
        };
        let number = |name: &str| field(name).and_then(|v| v.parse::<usize>().ok());
        let mut sockets: Vec<&str> = text
            .lines()
            .filter_map(|l| {
                let (key, value) = l.split_once(':')?;
                (key.trim() == "physical id").then(|| value.trim())
            })
            .collect();
        sockets.sort_unstable();
        sockets.dedup();
        let threads_per_core = match (number("siblings"), number("cpu cores")) {
            (Some(s), Some(c)) if c > 0 && s >= c => s / c,
            _ => 1,
        };
        HostCpu {
            model: field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string()),
            vendor: field("vendor_id").unwrap_or_default(),
            isa: String::new(),
            logical_cpus: text
                .lines()
                .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
                .count(),
            sockets: sockets.len().max(1),
            threads_per_core,
            usable_cpus: 0,
        }
    }

    /// One line: "AMD EPYC (AuthenticAMD), AVX2+FMA, 2 CPUs: 1 socket, 1 thread per core".
    pub fn summary(&self) -> String {
        let vendor = if self.vendor.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.vendor)
        };
        let usable = if self.usable_cpus != self.logical_cpus && self.usable_cpus > 0 {
            format!(", {} for this process", self.usable_cpus)
        } else {
            String::new()
        };
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        format!(
            "{}{vendor}, {}, {}{usable}: {}, {} per core",
            self.model,
            self.isa,
            plural(self.logical_cpus, "CPU"),
            plural(self.sockets, "socket"),
            plural(self.threads_per_core, "thread"),
        )
    }
}

/// The widest SIMD level of this CPU.
fn isa() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            let mut isa = String::from("AVX-512");
            if std::is_x86_feature_detected!("avx512vnni") {
                isa.push_str("+VNNI");
            }
            if std::is_x86_feature_detected!("avx512bf16") {
                isa.push_str("+BF16");
            }
            return isa;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return "AVX2+FMA".into();
        }
        if std::is_x86_feature_detected!("sse4.2") {
            return "SSE4.2".into();
        }
    }
    std::env::consts::ARCH.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_gives_model_vendor_and_topology() {
        let cpu = |id: usize, package: usize| {
            format!(
                "processor\t: {id}\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\nphysical id\t: {package}\nsiblings\t: 4\ncpu cores\t: 2\n\n"
            )
        };
        let text: String = (0..8).map(|i| cpu(i, i / 4)).collect();
        let host = HostCpu::from_cpuinfo(&text);
        assert_eq!(host.model, "Intel(R) Xeon(R) Processor");
        assert_eq!(host.vendor, "GenuineIntel");
        assert_eq!(
            (host.logical_cpus, host.sockets, host.threads_per_core),
            (8, 2, 2)
        );
        let host = HostCpu {
            isa: "AVX-512+VNNI".into(),
            usable_cpus: 2,
            ..host
        };
        assert_eq!(
            host.summary(),
            "Intel(R) Xeon(R) Processor (GenuineIntel), AVX-512+VNNI, 8 CPUs, 2 for this process: 2 sockets, 2 threads per core"
        );
    }

    #[test]
    fn this_host_is_detected() {
        let host = HostCpu::detect();
        assert!(host.usable_cpus >= 1);
        assert!(!host.isa.is_empty() && !host.model.is_empty());
    }
}
