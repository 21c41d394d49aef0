//! A run spread over processes, one device each, on one machine or many (`srun dinoadapt
//! pretrain …` under Slurm, or `--rank R --world-size N --coordinator HOST:PORT` by hand),
//! joined by burn-collective's global level: process 0 serves the orchestrator, every process
//! is a node of it.
//!
//! Blocked upstream: burn-collective 0.21.0's global all-reduce hangs from its second call
//! (`SyncService::sync` clears a copy of its synced-peer list, so the next sync never sees the
//! list equal to the nodes). A run refuses to start rather than hang, unless
//! [`GLOBAL_COLLECTIVE_GATE`] is set (to reproduce it, or with a fixed burn-collective). Ports from the coordinator's `PORT`: the orchestrator on `PORT`, the
//! watchdog on `PORT + 1`, node `r`'s tensor service on `PORT + 2 + r`.
//!
//! burn-collective waits for a dead peer forever, so a watchdog joins the processes too: node 0
//! holds a TCP connection to every other node, each side writes a heartbeat every few seconds,
//! and a connection that closes (a process killed or crashed) or falls silent for a minute
//! before its node said it finished stops this process with a message that names the node and
//! says how to resume.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::run::RunError;

/// Where this process sits in a run over several processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLaunch {
    /// This process's rank, 0-based.
    pub node: usize,
    /// Processes in the run.
    pub nodes: usize,
    /// Host of process 0 (the orchestrator and the watchdog's hub).
    pub coordinator: String,
    /// The coordinator's base port.
    pub port: u16,
    /// The host name the other processes reach this one at.
    pub host: String,
    /// Under Slurm: this task's index on its machine (`SLURM_LOCALID`), which picks its GPU.
    pub local_id: Option<usize>,
}

/// The default coordinator port (PyTorch's `MASTER_PORT` convention).
pub const DEFAULT_PORT: u16 = 29500;

/// The first host of a Slurm node list (`gpu[01-04,07],cpu5` → `gpu01`).
pub fn first_slurm_host(list: &str) -> Option<String> {
    let list = list.trim();
    let head_end = list.find([',', '[']).unwrap_or(list.len());
    let prefix = &list[..head_end];
    if list[head_end..].starts_with('[') {
        let inner = &list[head_end + 1..];
        let first = inner.split([',', '-', ']']).next()?;
        return Some(format!("{prefix}{first}"));
    }
    (!prefix.is_empty()).then(|| prefix.to_string())
}

fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}`: give the coordinator as HOST:PORT"))?;
    let port = port
        .parse()
        .map_err(|_| format!("`{s}`: `{port}` is not a port number"))?;
    Ok((host.to_string(), port))
}

impl NodeLaunch {
    /// From the command line: `--rank`, `--world-size`, `--coordinator HOST:PORT` and the host
    /// name this process is reached at (default: the coordinator's host when it is a loopback
    /// address, else this machine's host name).
    pub fn from_flags(
        rank: usize,
        world: usize,
        coordinator: &str,
        host: Option<&str>,
    ) -> Result<Self, String> {
        if world < 2 {
            return Err(format!(
                "--world-size {world}: a run over processes needs at least 2"
            ));
        }
        if rank >= world {
            return Err(format!("--rank {rank} is not below --world-size {world}"));
        }
        let (coordinator, port) = split_host_port(coordinator)?;
        let loopback = coordinator == "localhost" || coordinator.starts_with("127.");
        let host = match host {
            Some(h) => h.to_string(),
            None if loopback => coordinator.clone(),
            None => this_host(),
        };
        Ok(NodeLaunch {
            node: rank,
            nodes: world,
            coordinator,
            port,
            host,
            local_id: None,
        })
    }

    /// From Slurm's environment (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`,
    /// `SLURM_JOB_NODELIST`, `SLURMD_NODENAME`), when it describes more than one task; the
    /// coordinator is the job's first node (or `MASTER_ADDR`), on `MASTER_PORT` or
    /// [`DEFAULT_PORT`].
    pub fn from_slurm(env: impl Fn(&str) -> Option<String>) -> Option<Result<Self, String>> {
        let tasks: usize = env("SLURM_NTASKS")?.parse().ok()?;
        if tasks < 2 {
            return None;
        }
        let parse = |key: &str| -> Result<usize, String> {
            env(key)
                .ok_or_else(|| format!("Slurm: {key} is not set"))?
                .parse()
                .map_err(|_| format!("Slurm: {key} is not a number"))
        };
        let launch = (|| {
            let node = parse("SLURM_PROCID")?;
            let coordinator = match env("MASTER_ADDR") {
                Some(a) => a,
                None => env("SLURM_JOB_NODELIST")
                    .or_else(|| env("SLURM_NODELIST"))
                    .and_then(|l| first_slurm_host(&l))
                    .ok_or("Slurm: SLURM_JOB_NODELIST names no node (set MASTER_ADDR)")?,
            };
            let port = match env("MASTER_PORT") {
                Some(p) => p
                    .parse()
                    .map_err(|_| format!("MASTER_PORT `{p}` is not a port number"))?,
                None => DEFAULT_PORT,
            };
            Ok(NodeLaunch {
                node,
                nodes: tasks,
                coordinator,
                port,
                host: env("SLURMD_NODENAME").unwrap_or_else(this_host),
                local_id: parse("SLURM_LOCALID").ok(),
            })
        })();
        Some(launch)
    }

    /// This process's place from the command line (`--rank`, `--world-size`, `--coordinator`,
    /// `--node-host`), else from Slurm's environment under `srun` with more than one task
    /// (`--coordinator` and `--node-host` still override); `None` for a run in this process
    /// alone.
    pub fn resolve(
        rank: Option<usize>,
        world: Option<usize>,
        coordinator: Option<&str>,
        host: Option<&str>,
    ) -> Result<Option<Self>, String> {
        if let (Some(rank), Some(world)) = (rank, world) {
            let coordinator = coordinator.unwrap_or("127.0.0.1:29500");
            return Self::from_flags(rank, world, coordinator, host).map(Some);
        }
        let Some(launch) = Self::from_slurm(|k| std::env::var(k).ok()) else {
            return Ok(None);
        };
        let mut launch = launch?;
        if let Some(c) = coordinator {
            let (host, port) = split_host_port(c)?;
            launch.coordinator = host;
            launch.port = port;
        }
        if let Some(h) = host {
            launch.host = h.to_string();
        }
        Ok(Some(launch))
    }

    fn port_at(&self, offset: usize) -> Result<u16, String> {
        u16::try_from(self.port as usize + offset)
            .map_err(|_| format!("port {} + {offset} is past 65535", self.port))
    }

    /// The orchestrator, `host:port`.
    pub fn orchestrator(&self) -> String {
        format!("{}:{}", self.coordinator, self.port)
    }

    /// This node's tensor service, `host:port`.
    pub fn address(&self) -> Result<String, String> {
        Ok(format!("{}:{}", self.host, self.port_at(2 + self.node)?))
    }
}

fn this_host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".into())
}

const BEAT: Duration = Duration::from_secs(2);
const SILENCE: Duration = Duration::from_secs(60);
const JOIN: Duration = Duration::from_secs(600);

/// The watchdog of one process: its connections to the other nodes.
pub struct Watchdog {
    finished: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

fn stop(why: String) -> ! {
    eprintln!(
        "Error: {why}; stopping this process too. The run continues from its last checkpoint \
         with --resume on the same number of processes."
    );
    std::process::exit(3)
}

impl Watchdog {
    /// Starts watching: node 0 accepts the others' connections, every other node connects to
    /// node 0 (retrying while node 0 starts).
    pub fn start(launch: &NodeLaunch) -> Result<Self, RunError> {
        let port = launch.port_at(1).map_err(RunError::Config)?;
        let dog = Watchdog {
            finished: Arc::new(AtomicBool::new(false)),
            streams: Arc::new(Mutex::new(Vec::new())),
        };
        if launch.node == 0 {
            let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
                RunError::Config(format!("the watchdog cannot listen on port {port}: {e}"))
            })?;
            let others = launch.nodes - 1;
            let (finished, streams) = (dog.finished.clone(), dog.streams.clone());
            std::thread::spawn(move || {
                for _ in 0..others {
                    let Ok((mut stream, _)) = listener.accept() else {
                        continue;
                    };
                    let mut id = [0u8; 4];
                    if stream.read_exact(&mut id).is_err() {
                        continue;
                    }
                    let node = u32::from_le_bytes(id) as usize;
                    watch(stream, node, finished.clone(), streams.clone());
                }
            });
        } else {
            let address = format!("{}:{port}", launch.coordinator);
            let node = launch.node;
            let (finished, streams) = (dog.finished.clone(), dog.streams.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + JOIN;
                let mut stream = loop {
                    let connected = address
                        .to_socket_addrs()
                        .ok()
                        .and_then(|mut a| a.next())
                        .and_then(|a| TcpStream::connect_timeout(&a, BEAT).ok());
                    match connected {
                        Some(s) => break s,
                        None if Instant::now() > deadline => stop(format!(
                            "node 0's watchdog at {address} did not answer for {} s",
                            JOIN.as_secs()
                        )),
                        None => std::thread::sleep(Duration::from_millis(200)),
                    }
                };
                if stream.write_all(&(node as u32).to_le_bytes()).is_err() {
                    stop(format!("lost node 0's watchdog at {address}"));
                }
                watch(stream, 0, finished, streams);
            });
        }
        Ok(dog)
    }

    /// This node finished its run: tell the others, and stop watching.
    pub fn done(&self) {
        self.finished.store(true, Ordering::SeqCst);
        for s in self.streams.lock().expect("watchdog streams").iter_mut() {
            let _ = s.write_all(b"D");
        }
    }
}

/// Heartbeats on `stream` to and from `node`, on two threads; a lost or silent connection stops
/// the process unless this node or that one finished.
fn watch(
    stream: TcpStream,
    node: usize,
    finished: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
) {
    let Ok(mut writer) = stream.try_clone() else {
        stop(format!("cannot watch node {node}"));
    };
    if let Ok(s) = stream.try_clone() {
        streams.lock().expect("watchdog streams").push(s);
    }
    let beat_finished = finished.clone();
    std::thread::spawn(move || {
        while !beat_finished.load(Ordering::SeqCst) {
            if writer.write_all(b".").is_err() {
                break;
            }
            std::thread::sleep(BEAT);
        }
    });
    std::thread::spawn(move || {
        let mut stream = stream;
        let _ = stream.set_read_timeout(Some(SILENCE));
        let mut byte = [0u8; 1];
        loop {
            let lost = match stream.read(&mut byte) {
                Ok(0) => Some("its connection closed (the process ended)".to_string()),
                Ok(_) if byte[0] == b'D' => return,
                Ok(_) => None,
                Err(e) => Some(format!("it fell silent ({e})")),
            };
            if let Some(why) = lost {
                if finished.load(Ordering::SeqCst) {
                    return;
                }
                stop(format!("node {node} of the run stopped: {why}"));
            }
        }
    });
}

/// Set to run across processes despite burn-collective 0.21.0's global all-reduce hang.
pub const GLOBAL_COLLECTIVE_GATE: &str = "DINOADAPT_GLOBAL_COLLECTIVE";

/// Runs the recipe as process `launch.node` of `launch.nodes`, on `device`: one replica per
/// process; rank 0 also serves the orchestrator and writes the run's files.
#[cfg(feature = "collective")]
pub fn run_across_processes<A: burn::tensor::backend::AutodiffBackend>(
    recipe: &crate::Recipe,
    options: &crate::RunOptions,
    device: &A::Device,
    launch: &NodeLaunch,
) -> Result<crate::RunSummary, RunError> {
    use dinoadapt_core::train::replicas::collective::{
        start_orchestrator, CollectivePeer, NodeSetup,
    };

    if std::env::var_os(GLOBAL_COLLECTIVE_GATE).is_none() {
        return Err(RunError::Config(format!(
            "process {} of {}: runs across processes are blocked by burn-collective 0.21.0, whose \
             global all-reduce waits forever from its second call (SyncService::sync clears a \
             copy of its list of synced peers, not the list: src/global/node/sync.rs), so such a \
             run would hang at its first iteration. Train on the devices of one machine with \
             --devices instead. ({GLOBAL_COLLECTIVE_GATE}=1 runs it anyway, to reproduce the \
             hang or with a fixed burn-collective.)",
            launch.node, launch.nodes
        )));
    }
    if launch.node == 0 {
        start_orchestrator(launch.port).map_err(RunError::Config)?;
    }
    let watchdog = Watchdog::start(launch)?;
    tracing::info!(
        "process {} of {}: orchestrator at {}, this node at {}",
        launch.node,
        launch.nodes,
        launch.orchestrator(),
        launch.address().map_err(RunError::Config)?
    );
    let setup = NodeSetup {
        node: launch.node,
        nodes: launch.nodes,
        devices_per_node: 1,
        orchestrator: launch.orchestrator(),
        address: launch.address().map_err(RunError::Config)?,
    };
    let peer = CollectivePeer::register_node::<A::InnerBackend>(0, &setup, device)
        .map_err(RunError::Config)?;
    let replica = crate::replica::Replica {
        replicas: Arc::new(peer),
    };
    let out = crate::run::run_replica::<A>(recipe, options, device, Some(&replica));
    if out.is_ok() {
        peer.finish::<A::InnerBackend>().map_err(RunError::Config)?;
    }
    watchdog.done();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_host_of_a_slurm_node_list() {
        assert_eq!(
            first_slurm_host("gpu[01-04,07],cpu5").as_deref(),
            Some("gpu01")
        );
        assert_eq!(first_slurm_host("node7,node9").as_deref(), Some("node7"));
        assert_eq!(first_slurm_host("a100-[3,5]").as_deref(), Some("a100-3"));
        assert_eq!(first_slurm_host("solo").as_deref(), Some("solo"));
    }

    #[test]
    fn a_launch_from_slurm_or_from_flags() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let slurm = NodeLaunch::from_slurm(env(&[
            ("SLURM_NTASKS", "8"),
            ("SLURM_PROCID", "5"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "gpu[12-15]"),
            ("SLURMD_NODENAME", "gpu14"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((slurm.node, slurm.nodes, slurm.local_id), (5, 8, Some(1)));
        assert_eq!(slurm.orchestrator(), "gpu12:29500");
        assert_eq!(slurm.address().unwrap(), "gpu14:29507");
        assert!(NodeLaunch::from_slurm(env(&[("SLURM_NTASKS", "1")])).is_none());
        assert!(NodeLaunch::from_slurm(env(&[])).is_none());

        let by_hand = NodeLaunch::from_flags(1, 2, "127.0.0.1:4100", None).unwrap();
        assert_eq!(by_hand.address().unwrap(), "127.0.0.1:4103");
        assert!(NodeLaunch::from_flags(2, 2, "127.0.0.1:4100", None).is_err());
        assert!(NodeLaunch::from_flags(0, 2, "nohost", None).is_err());
    }
}
