//! Running a user's job as its recipe script runs it: a bash script of `dinoadapt` commands
//! (`recipes/*.sh`), its variables given in the environment. [`run_script`] streams the script's
//! output to the terminal (each line prefixed with the job's name, the `== step` lines the
//! script prints as they come) and to a log file, and records how long each step took, so that a
//! report can show the job's steps and timings.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Why a job could not run or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "job `{job}` failed at step `{step}` (exit status {status}); its output is in {}",
        log.display()
    )]
    Failed {
        job: String,
        step: String,
        status: String,
        log: PathBuf,
    },
}

/// One `== step` of a script and how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct StepTime {
    pub step: String,
    pub seconds: f64,
}

/// What a finished job did.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub job: String,
    pub steps: Vec<StepTime>,
    pub seconds: f64,
    pub log: PathBuf,
}

/// Runs the bash `script` (its text) as job `job` with `env`, logging to `log`; `quiet` keeps
/// the terminal to the step lines.
pub fn run_script(
    job: &str,
    script: &str,
    env: &[(&str, String)],
    log: &Path,
    quiet: bool,
) -> Result<JobRecord, JobError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| JobError::Io { path, source }
    };
    if let Some(d) = log.parent() {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    let mut file = std::fs::File::create(log).map_err(io(log))?;
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(job)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io(Path::new("bash")))?;
    // stderr joins stdout through a thread, line by line.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let err = child.stderr.take().expect("piped");
    let tx_err = tx.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx_err.send(line);
        }
    });
    let out = child.stdout.take().expect("piped");
    let tx_out = tx;
    let reader_out = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx_out.send(line);
        }
    });
    let start = Instant::now();
    let mut steps: Vec<StepTime> = Vec::new();
    let mut step_start = Instant::now();
    let mut current = String::from("(start)");
    for line in rx {
        let _ = writeln!(file, "{line}");
        if let Some(name) = line.strip_prefix("== ") {
            if current != "(start)" {
                steps.push(StepTime {
                    step: current.clone(),
                    seconds: step_start.elapsed().as_secs_f64(),
                });
            }
            current = name.trim().to_string();
            step_start = Instant::now();
            eprintln!("[{job} {:>5.0} s] {current}", start.elapsed().as_secs_f64());
        } else if !quiet {
            eprintln!("[{job}]   {line}");
        }
    }
    let _ = reader.join();
    let _ = reader_out.join();
    let status = child.wait().map_err(io(Path::new("bash")))?;
    steps.push(StepTime {
        step: current.clone(),
        seconds: step_start.elapsed().as_secs_f64(),
    });
    if !status.success() {
        return Err(JobError::Failed {
            job: job.to_string(),
            step: current,
            status: status
                .code()
                .map_or_else(|| "killed".into(), |c| c.to_string()),
            log: log.to_path_buf(),
        });
    }
    Ok(JobRecord {
        job: job.to_string(),
        steps,
        seconds: start.elapsed().as_secs_f64(),
        log: log.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_timed_and_a_failing_step_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs/job.log");
        let script = "echo \"== first\"; echo hello \"$WHO\"; echo oops >&2; echo '== second'";
        let r = run_script("t", script, &[("WHO", "world".into())], &log, true).unwrap();
        let names: Vec<&str> = r.steps.iter().map(|s| s.step.as_str()).collect();
        assert_eq!(names, ["first", "second"]);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("hello world") && text.contains("oops"));
        let err = run_script("t", "set -e; echo '== breaks'; false", &[], &log, true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`breaks`") && err.contains("status 1"),
            "{err}"
        );
    }
}
