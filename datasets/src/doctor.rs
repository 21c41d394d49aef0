//! `dinoadapt doctor`: checks of the machine before a long batch, each saying what it found and,
//! when something is wrong, what to do about it.
//!
//! A [`Check`] is plain data: the program gathers the generic checks here
//! ([`generic_checks`]: CPU, memory, CUDA devices, the output folder), the checkpoint's
//! ([`checkpoint_check`]) and every domain's own ([`crate::Domain::doctor`]: the libraries it
//! links and the formats they read), then prints them with [`render_table`] or as JSON.

use std::path::{Path, PathBuf};

use dinoadapt_core::backend::{cuda_devices, CudaDevices};
use dinoadapt_core::checkpoint::LoadedCheckpoint;
use dinoadapt_core::host::HostCpu;
use serde::Serialize;

use crate::Domain;

/// How a check came out, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Ready.
    Ok,
    /// Works, but something may slow or limit a run (no CUDA, little free disk).
    Warn,
    /// A run that needs this will fail.
    Fail,
}

impl CheckStatus {
    /// As the table shows it (failures in capitals, to stand out).
    pub fn label(self) -> &'static str {
        match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "FAIL",
        }
    }
}

/// One thing checked: where (`area`: system, device, output, model or a domain's name), what
/// (`name`), how it came out, what was found and, unless it is ok, what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub area: String,
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
    /// What to do about a warning or failure; empty when the check is ok.
    pub fix: String,
}

impl Check {
    pub fn new(
        area: impl Into<String>,
        name: impl Into<String>,
        status: CheckStatus,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Check {
            area: area.into(),
            name: name.into(),
            status,
            detail: detail.into(),
            fix: fix.into(),
        }
    }

    pub fn ok(area: impl Into<String>, name: impl Into<String>, detail: impl Into<String>) -> Self {
        Check::new(area, name, CheckStatus::Ok, detail, "")
    }

    pub fn warn(
        area: impl Into<String>,
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Check::new(area, name, CheckStatus::Warn, detail, fix)
    }

    pub fn fail(
        area: impl Into<String>,
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Check::new(area, name, CheckStatus::Fail, detail, fix)
    }
}

/// The worst status among `checks` (`Ok` for none).
pub fn overall(checks: &[Check]) -> CheckStatus {
    checks
        .iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(CheckStatus::Ok)
}

/// `checks` as an aligned text table (status, area, check, detail), each fix on its own line
/// under the detail, and a closing count.
pub fn render_table(checks: &[Check]) -> String {
    let header = ["STATUS", "AREA", "CHECK", "DETAIL"];
    let width = |i: usize, cell: fn(&Check) -> &str| {
        checks
            .iter()
            .map(|c| cell(c).chars().count())
            .chain([header[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths = [
        width(0, |c| c.status.label()),
        width(1, |c| &c.area),
        width(2, |c| &c.name),
    ];
    let row = |cells: [&str; 4]| {
        let mut line = String::new();
        for (cell, w) in cells.iter().zip(widths) {
            line.push_str(&format!("{cell:<w$}  "));
        }
        line.push_str(cells[3]);
        line.trim_end().to_string()
    };
    let mut out = vec![row(header)];
    let indent = " ".repeat(widths.iter().map(|w| w + 2).sum());
    for c in checks {
        out.push(row([c.status.label(), &c.area, &c.name, &c.detail]));
        if c.status != CheckStatus::Ok && !c.fix.is_empty() {
            out.push(format!("{indent}fix: {}", c.fix));
        }
    }
    let count = |s: CheckStatus| checks.iter().filter(|c| c.status == s).count();
    out.push(String::new());
    out.push(format!(
        "{} checks: {} ok, {} warn, {} fail",
        checks.len(),
        count(CheckStatus::Ok),
        count(CheckStatus::Warn),
        count(CheckStatus::Fail)
    ));
    out.join("\n") + "\n"
}

/// Every check of a run: the generic ones for the output folder `out`, the checkpoint's when
/// one was given (loaded, or the loader's error), then each of `domains`' own.
pub fn run_checks(
    out: &Path,
    checkpoint: Option<Result<LoadedCheckpoint, String>>,
    domains: &[&dyn Domain],
) -> Vec<Check> {
    let mut checks = generic_checks(out);
    checks.extend(checkpoint.map(|loaded| match loaded {
        Ok(ck) => checkpoint_check(&ck),
        Err(error) => checkpoint_failed(&error),
    }));
    checks.extend(domains.iter().flat_map(|d| d.doctor()));
    checks
}

/// `checks` as [`render_json`] or [`render_table`] gives them.
pub fn render(checks: &[Check], json: bool) -> String {
    if json {
        render_json(checks)
    } else {
        render_table(checks)
    }
}

/// Whether any of `checks` failed (the program then exits 1).
pub fn failed(checks: &[Check]) -> bool {
    overall(checks) == CheckStatus::Fail
}

/// `checks` as one pretty JSON object: `{"status": worst, "checks": [...]}`, with a newline.
pub fn render_json(checks: &[Check]) -> String {
    #[derive(Serialize)]
    struct Report<'a> {
        status: CheckStatus,
        checks: &'a [Check],
    }
    let report = Report {
        status: overall(checks),
        checks,
    };
    serde_json::to_string_pretty(&report).expect("checks serialise") + "\n"
}

/// `bytes` in GiB, one decimal.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The checks that need no domain: CPU, memory, CUDA devices, and the output folder `out`
/// (created when missing, then written to, and its free space).
pub fn generic_checks(out: &Path) -> Vec<Check> {
    let mut checks = vec![cpu_check(), memory_check()];
    checks.extend(device_checks(cuda_devices()));
    checks.push(write_check(out));
    checks.push(disk_check(out));
    checks
}

/// The CPU model, vendor, widest SIMD and topology ([`HostCpu`]), and the CPUs this process
/// may use.
pub fn cpu_check() -> Check {
    Check::ok("system", "cpu", HostCpu::detect().summary())
}

/// Below this much available memory a run may swap or be killed.
pub const LOW_MEMORY_BYTES: u64 = 4 << 30;

/// `MemTotal` and `MemAvailable` of a `/proc/meminfo` text, in bytes.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim_start_matches(':')
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    Some((field("MemTotal")?, field("MemAvailable")?))
}

/// Total and available memory (`/proc/meminfo`).
pub fn memory_check() -> Check {
    match std::fs::read_to_string("/proc/meminfo")
        .ok()
        .as_deref()
        .and_then(parse_meminfo)
    {
        Some((total, available)) => {
            let detail = format!("{} available of {}", gib(available), gib(total));
            if available < LOW_MEMORY_BYTES {
                Check::warn(
                    "system",
                    "memory",
                    detail,
                    "close other programs, or run with a smaller --batch-size",
                )
            } else {
                Check::ok("system", "memory", detail)
            }
        }
        None => Check::warn(
            "system",
            "memory",
            "unknown (no readable /proc/meminfo)",
            "check the free memory yourself before a long run",
        ),
    }
}

/// The CUDA devices as checks: one per device, or one saying why there are none.
pub fn device_checks(devices: CudaDevices) -> Vec<Check> {
    let rebuild = "rebuild with `cargo build --release --features cuda` (CPU runs work as they are: --device cpu)";
    match devices {
        CudaDevices::NotBuilt => vec![Check::warn(
            "device",
            "cuda",
            "built without CUDA: runs use the CPU only",
            rebuild,
        )],
        CudaDevices::Unavailable(why) => vec![Check::warn(
            "device",
            "cuda",
            format!("built with CUDA, but the driver is not usable: {why}"),
            "install the NVIDIA driver (`nvidia-smi` should list the GPUs), or run with --device cpu",
        )],
        CudaDevices::Found(list) if list.is_empty() => vec![Check::warn(
            "device",
            "cuda",
            "built with CUDA, but the driver lists no devices",
            "check `nvidia-smi` and CUDA_VISIBLE_DEVICES, or run with --device cpu",
        )],
        CudaDevices::Found(list) => list
            .into_iter()
            .map(|d| {
                Check::ok(
                    "device",
                    format!("cuda:{}", d.index),
                    format!("{}, {} memory", d.name, gib(d.total_memory)),
                )
            })
            .collect(),
    }
}

/// Whether outputs can be written under `out`: the folder is created when missing, then a file
/// is created in it and removed.
pub fn write_check(out: &Path) -> Check {
    let name = "write permission";
    let fix = "give --out a folder you can create and write in, or fix the owner/permissions of \
               this one (chown, chmod)";
    let existed = out.is_dir();
    if let Err(e) = std::fs::create_dir_all(out) {
        return Check::fail(
            "output",
            name,
            format!("cannot create {}: {e}", out.display()),
            fix,
        );
    }
    let probe = out.join(format!(".dinoadapt-doctor-{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"dinoadapt doctor\n"));
    let removed = std::fs::remove_file(&probe);
    let shown = out.canonicalize().unwrap_or_else(|_| out.to_path_buf());
    match written.and(removed) {
        Ok(()) if existed => Check::ok("output", name, format!("{} is writable", shown.display())),
        Ok(()) => Check::ok(
            "output",
            name,
            format!("{} created, writable", shown.display()),
        ),
        Err(e) => Check::fail(
            "output",
            name,
            format!("cannot write in {}: {e}", shown.display()),
            fix,
        ),
    }
}

/// Below this much free space the output check fails; below [`WARN_FREE_BYTES`] it warns.
pub const MIN_FREE_BYTES: u64 = 1 << 30;
/// Feature stores of a slide or raster batch run to tens of GiB.
pub const WARN_FREE_BYTES: u64 = 10 << 30;

/// The check of `free` bytes left (of `total`) on the filesystem of `shown`.
pub fn disk_status(shown: &Path, free: u64, total: u64) -> Check {
    let detail = format!("{} free of {} ({})", gib(free), gib(total), shown.display());
    let fix = "free space on that disk, or give --out a folder on a larger one";
    if free < MIN_FREE_BYTES {
        Check::fail("output", "free disk", detail, fix)
    } else if free < WARN_FREE_BYTES {
        Check::warn("output", "free disk", detail, fix)
    } else {
        Check::ok("output", "free disk", detail)
    }
}

/// Free space on the filesystem of `out` (or of its nearest existing ancestor).
pub fn disk_check(out: &Path) -> Check {
    let at: PathBuf = out
        .ancestors()
        .find(|p| p.is_dir())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let shown = at.canonicalize().unwrap_or(at);
    match free_space(&shown) {
        Ok((free, total)) => disk_status(&shown, free, total),
        Err(e) => Check::warn(
            "output",
            "free disk",
            format!("unknown for {}: {e}", shown.display()),
            "check the free space yourself (`df -h`) before a long run",
        ),
    }
}

/// (free to unprivileged users, total) bytes of the filesystem holding `path`.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // the statvfs field types differ between platforms
pub fn free_space(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string and `stat` is a valid place for the result.
    if unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    let block = stat.f_frsize as u64;
    Ok((stat.f_bavail as u64 * block, stat.f_blocks as u64 * block))
}

/// Free space is known on Unix only.
#[cfg(not(unix))]
pub fn free_space(_path: &Path) -> std::io::Result<(u64, u64)> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "free space is read on Unix only",
    ))
}

/// What a fix for a checkpoint that does not load says.
pub const CHECKPOINT_FIX: &str = "give a checkpoint dinoadapt reads (a Hugging Face folder with \
     config.json, a torch-hub .pth, timm pytorch_model.bin/.safetensors, dinoadapt native \
     safetensors); when its shapes do not tell the architecture add --preset or --arch-file";

/// A checkpoint that loaded: its layout, file format and architecture.
pub fn checkpoint_check(ck: &LoadedCheckpoint) -> Check {
    let c = &ck.config;
    Check::ok(
        "model",
        "checkpoint",
        format!(
            "{}: {} layout ({}), ViT embed_dim={} depth={} heads={} patch={} registers={} \
             in_chans={}, {:.2} M parameters",
            ck.path.display(),
            ck.layout.name(),
            ck.file_format.name(),
            c.embed_dim,
            c.depth,
            c.num_heads,
            c.patch_size,
            c.num_register_tokens,
            c.in_chans,
            ck.num_params() as f64 / 1e6
        ),
    )
}

/// A checkpoint that did not load, with the loader's `error`.
pub fn checkpoint_failed(error: &str) -> Check {
    Check::fail("model", "checkpoint", error, CHECKPOINT_FIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dinoadapt_core::backend::CudaDeviceInfo;

    #[test]
    fn the_table_aligns_columns_and_shows_fixes_under_problems() {
        let checks = vec![
            Check::ok("system", "cpu", "a CPU, 2 cores"),
            Check::warn("output", "free disk", "3.0 GiB free", "free space"),
            Check::fail(
                "pathology",
                "openslide",
                "missing",
                "apt install libopenslide0",
            ),
        ];
        let table = render_table(&checks);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "STATUS  AREA       CHECK      DETAIL");
        assert_eq!(lines[1], "ok      system     cpu        a CPU, 2 cores");
        assert_eq!(lines[2], "warn    output     free disk  3.0 GiB free");
        assert_eq!(lines[3], "                              fix: free space");
        assert_eq!(lines[4], "FAIL    pathology  openslide  missing");
        assert_eq!(
            lines[5],
            "                              fix: apt install libopenslide0"
        );
        assert_eq!(lines[7], "3 checks: 1 ok, 1 warn, 1 fail");
        assert_eq!(overall(&checks), CheckStatus::Fail);
        assert_eq!(overall(&checks[..1]), CheckStatus::Ok);
        assert_eq!(overall(&[]), CheckStatus::Ok);
        let json = serde_json::to_value(&checks[2]).unwrap();
        assert_eq!(json["status"], "fail");
        assert_eq!(json["area"], "pathology");
        assert_eq!(json["fix"], "apt install libopenslide0");
    }

    #[test]
    fn doctor_writes_in_and_measures_a_temp_folder_it_creates() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("new/out");
        let check = write_check(&out);
        assert_eq!(check.status, CheckStatus::Ok, "{check:?}");
        assert!(check.detail.contains("created"), "{check:?}");
        assert!(out.is_dir());
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "probe removed");
        let again = write_check(&out);
        assert!(again.detail.ends_with("is writable"), "{again:?}");
        let disk = disk_check(&out);
        assert_ne!(disk.status, CheckStatus::Fail, "{disk:?}");
        assert!(disk.detail.contains("free of"), "{disk:?}");
        let (free, total) = free_space(&out).unwrap();
        assert!(free <= total && total > 0);
    }

    #[test]
    fn doctor_fails_an_output_folder_under_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let check = write_check(&file.join("out"));
        assert_eq!(check.status, CheckStatus::Fail, "{check:?}");
        assert!(check.detail.starts_with("cannot create"), "{check:?}");
        assert!(check.fix.contains("--out"), "{check:?}");
        // Free space is read from the nearest folder that exists.
        let disk = disk_check(&file.join("out"));
        assert!(disk
            .detail
            .contains(&*dir.path().canonicalize().unwrap().to_string_lossy()));
    }

    #[test]
    fn doctor_grades_free_disk_and_memory() {
        let p = Path::new("/data");
        assert_eq!(disk_status(p, 100 << 30, 200 << 30).status, CheckStatus::Ok);
        assert_eq!(disk_status(p, 5 << 30, 200 << 30).status, CheckStatus::Warn);
        let full = disk_status(p, 1 << 20, 200 << 30);
        assert_eq!(full.status, CheckStatus::Fail);
        assert_eq!(full.detail, "0.0 GiB free of 200.0 GiB (/data)");
        let meminfo = "MemTotal:       16318480 kB\nMemFree:  1 kB\nMemAvailable:    8159240 kB\n";
        assert_eq!(
            parse_meminfo(meminfo),
            Some((16318480 * 1024, 8159240 * 1024))
        );
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        assert_eq!(cpu_check().status, CheckStatus::Ok);
    }

    #[test]
    fn doctor_reports_cuda_devices_or_how_to_get_them() {
        let none = device_checks(CudaDevices::NotBuilt);
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].status, CheckStatus::Warn);
        assert!(none[0].fix.contains("--features cuda"), "{none:?}");
        let two = device_checks(CudaDevices::Found(vec![
            CudaDeviceInfo {
                index: 0,
                name: "NVIDIA H100".into(),
                total_memory: 80 << 30,
            },
            CudaDeviceInfo {
                index: 1,
                name: "NVIDIA H100".into(),
                total_memory: 80 << 30,
            },
        ]));
        assert_eq!(two[1].name, "cuda:1");
        assert_eq!(two[1].detail, "NVIDIA H100, 80.0 GiB memory");
        assert!(two.iter().all(|c| c.status == CheckStatus::Ok));
        let broken = device_checks(CudaDevices::Unavailable("cuInit: no driver".into()));
        assert!(broken[0].detail.ends_with("cuInit: no driver"));
        assert_eq!(
            device_checks(CudaDevices::Found(vec![]))[0].status,
            CheckStatus::Warn
        );
    }
}
