//! Private, throwaway Redis and PostgreSQL servers for fault tests.
//!
//! Fault tests kill, stop and restart their backing servers. They must only
//! ever do that to instances they own, never to the machine's shared Redis
//! (6379) or PostgreSQL (5432) that other tests use at the same time. So each
//! [`ExtraRedis`] / [`ExtraPostgres`] runs its own server on a free port with
//! its data in a temporary directory, and tears it down on drop.
//!
//! Everything here blocks (std::process, std::net): starting Redis takes
//! milliseconds, PostgreSQL (initdb + start) a second or two. Call it from a
//! multi-threaded tokio test or wrap it in `spawn_blocking`. Failures panic
//! with the server's log.
#![allow(dead_code)]

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A free TCP port on 127.0.0.1 (bind port 0, read it, drop the listener).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0 to find a free port")
        .local_addr()
        .expect("read the local address of the port-0 listener")
        .port()
}

/// Runs `start` on a fresh free port, retrying twice in case another
/// process grabbed the port in between; panics with every error.
fn on_free_port<T>(what: &str, mut start: impl FnMut(u16) -> Result<T, String>) -> T {
    let mut errors = Vec::new();
    for _ in 0..3 {
        match start(free_port()) {
            Ok(started) => return started,
            Err(e) => errors.push(e),
        }
    }
    panic!("could not start a private {what}:\n{}", errors.join("\n"));
}

/// Runs a command to completion; Err carries its status and output.
fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let output = [out.stdout, out.stderr].concat();
    let output = String::from_utf8_lossy(&output);
    match out.status.success() {
        true => Ok(()),
        false => Err(format!("{what} failed ({}):\n{output}", out.status)),
    }
}

fn read_log(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("<cannot read it: {e}>"));
    format!("--- {} ---\n{text}", path.display())
}

fn temp_dir(prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir();
    dir.expect("create a temp dir for a private server")
}

/// A private `redis-server` (no persistence: a kill loses all data).
pub struct ExtraRedis {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// Extra arguments it runs with (kept for restarts).
    args: Vec<String>,
}

impl ExtraRedis {
    /// Starts redis-server on a free port and waits until it answers PING.
    pub fn start() -> Self {
        let dir = temp_dir("tally-redis-");
        let (port, child) = on_free_port("Redis", |port| {
            Ok((port, spawn_redis(port, dir.path(), &[])?))
        });
        let child = Some(child);
        ExtraRedis {
            port,
            dir,
            child,
            args: Vec::new(),
        }
    }

    /// Starts redis-server with extra arguments (kept for restarts), e.g.
    /// `["--appendonly", "yes", "--appendfsync", "everysec"]`: later
    /// arguments override the defaults (no persistence) given before them.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = temp_dir("tally-redis-");
        let args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        let (port, child) = on_free_port("Redis", |port| {
            Ok((port, spawn_redis(port, dir.path(), &args)?))
        });
        ExtraRedis {
            port,
            dir,
            child: Some(child),
            args,
        }
    }

    /// Starts a replica of `master` and waits until its link is up and the
    /// master counts it, so that `WAIT 1` can succeed at once.
    pub fn start_replica_of(master: &ExtraRedis) -> Self {
        let dir = temp_dir("tally-redis-replica-");
        let args = vec![
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            master.port.to_string(),
        ];
        let (port, child) = on_free_port("Redis replica", |port| {
            Ok((port, spawn_redis(port, dir.path(), &args)?))
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        while !(redis_reply(port, "INFO replication", "master_link_status:")
            .is_some_and(|i| i.contains("master_link_status:up"))
            && redis_reply(master.port, "INFO replication", "connected_slaves:")
                .is_some_and(|i| i.contains("connected_slaves:1")))
        {
            assert!(
                Instant::now() < deadline,
                "the replica did not sync within {READY_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        ExtraRedis {
            port,
            dir,
            child: Some(child),
            args,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILLs the server and waits for it to exit. No-op if not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the private redis-server");
            child.wait().expect("wait for the killed redis-server");
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Undoes [`Self::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the private redis-server runs");
        let status = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} the private redis-server");
    }

    /// Starts the server again on the same port and dir (killing it first
    /// if it still runs) and waits until it answers PING.
    pub fn restart(&mut self) {
        self.kill();
        let child = spawn_redis(self.port, self.dir.path(), &self.args);
        self.child =
            Some(child.unwrap_or_else(|e| panic!("could not restart the private Redis:\n{e}")));
    }
}

impl Drop for ExtraRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = (child.kill(), child.wait());
        }
    }
}

/// Spawns redis-server and waits until *this* process answers on `port`
/// (INFO's process_id must match, so a stranger on the port is not taken
/// for it) and PING gets +PONG. Err carries the server log.
fn spawn_redis(port: u16, dir: &Path, args: &[String]) -> Result<Child, String> {
    let log_path = dir.join("redis.log");
    let log = OpenOptions::new().create(true).append(true).open(&log_path);
    let log = log.expect("open the Redis log file");
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the Redis log handle"))
        .stderr(log)
        .spawn()
        .expect("spawn redis-server (is it installed and on PATH?)");
    let ours = format!("\r\nprocess_id:{}\r\n", child.id());
    let deadline = Instant::now() + READY_TIMEOUT;
    let failure = loop {
        if redis_reply(port, "INFO server", "process_id:").is_some_and(|info| info.contains(&ours))
            && redis_reply(port, "PING", "+PONG").is_some()
        {
            return Ok(child);
        }
        if let Some(status) = child.try_wait().expect("poll redis-server") {
            break format!("exited with {status}");
        }
        if Instant::now() > deadline {
            let _ = (child.kill(), child.wait());
            break format!("did not answer within {READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Err(format!(
        "redis-server on port {port} {failure}\n{}",
        read_log(&log_path)
    ))
}

/// Sends an inline command; reads until the reply holds `marker` and a CRLF
/// after it. None if it cannot connect or the reply never gets there.
fn redis_reply(port: u16, command: &str, marker: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let (mut buf, mut chunk) = (Vec::new(), [0u8; 4096]);
    loop {
        let text = String::from_utf8_lossy(&buf);
        if let Some(at) = text.find(marker)
            && text[at + marker.len()..].contains("\r\n")
        {
            return Some(text.into_owned());
        }
        let n = stream.read(&mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A private PostgreSQL cluster (newest /usr/lib/postgresql/*/bin), trust
/// auth, fsync off. Data lives in `<tmp>/data`, socket and log in `<tmp>`.
pub struct ExtraPostgres {
    port: u16,
    bin: PathBuf,
    running: bool,
    dir: TempDir,
}

impl ExtraPostgres {
    /// initdb + start on a free port; waits until it accepts connections.
    pub fn start() -> Self {
        let bin = pg_bin_dir();
        let dir = temp_dir("tally-pg-");
        give_to_postgres(dir.path());
        let mut initdb = pg_command(&bin, "initdb", dir.path());
        initdb.arg("-D").arg(dir.path().join("data"));
        initdb.args("-A trust -U postgres -E UTF8 --locale=C --no-sync".split(' '));
        run(&mut initdb, "initdb").unwrap_or_else(|e| panic!("{e}"));
        let mut pg = ExtraPostgres {
            port: 0,
            bin,
            running: false,
            dir,
        };
        pg.port = on_free_port("PostgreSQL", |port| pg.pg_ctl_start(port).map(|()| port));
        pg
    }

    /// A streaming replica of `primary` (`pg_basebackup -R`), started on a
    /// free port; waits until it accepts connections.
    pub fn start_standby_of(primary: &ExtraPostgres) -> Self {
        let bin = primary.bin.clone();
        let dir = temp_dir("tally-pg-standby-");
        give_to_postgres(dir.path());
        let mut backup = pg_command(&bin, "pg_basebackup", dir.path());
        backup
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-R", "-X", "stream", "--no-sync"]);
        run(&mut backup, "pg_basebackup").unwrap_or_else(|e| panic!("{e}"));
        let mut pg = ExtraPostgres {
            port: 0,
            bin,
            running: false,
            dir,
        };
        pg.port = on_free_port("PostgreSQL standby", |port| {
            pg.pg_ctl_start(port).map(|()| port)
        });
        pg
    }

    /// Pauses (true) or resumes (false) WAL replay on this standby: it then
    /// trails its primary for as long as the test wants.
    pub async fn pause_replay(&self, paused: bool) {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url())
            .await
            .expect("connect to the standby");
        let call = if paused {
            "SELECT pg_wal_replay_pause()::text"
        } else {
            "SELECT pg_wal_replay_resume()::text"
        };
        sqlx::query(call)
            .execute(&mut conn)
            .await
            .expect("pause or resume replay");
        // A pause is only requested until replay reaches a safe point.
        let want = if paused { "paused" } else { "not paused" };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let state: String = sqlx::query_scalar("SELECT pg_get_wal_replay_pause_state()")
                .fetch_one(&mut conn)
                .await
                .expect("replay state");
            if state == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replay is {state:?}, not {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `pg_ctl stop -m immediate` (crash-like), waits. No-op if stopped.
    pub fn stop(&mut self) {
        if self.running {
            self.pg_ctl_stop().unwrap_or_else(|e| panic!("{e}"));
            self.running = false;
        }
    }

    /// `pg_ctl stop -m immediate`: a crash (no shutdown checkpoint; the
    /// next start runs crash recovery). The same as [`Self::stop`], named
    /// for what a test means by it. No-op if stopped.
    pub fn crash(&mut self) {
        self.stop();
    }

    /// `pg_ctl stop -m fast`: a clean shutdown (sessions are ended with
    /// `admin_shutdown`, a checkpoint is written). No-op if stopped.
    pub fn stop_clean(&mut self) {
        if self.running {
            run(
                self.pg_ctl().args(["-m", "fast", "-w", "stop"]),
                "pg_ctl stop -m fast",
            )
            .unwrap_or_else(|e| panic!("{e}"));
            self.running = false;
        }
    }

    /// Starts again on the same port and dir (stopping first if running);
    /// waits until it accepts connections (crash recovery included).
    pub fn start_again(&mut self) {
        self.stop();
        let started = self.pg_ctl_start(self.port);
        started.unwrap_or_else(|e| panic!("could not restart the private PostgreSQL:\n{e}"));
    }

    fn pg_ctl(&self) -> Command {
        let mut cmd = pg_command(&self.bin, "pg_ctl", self.dir.path());
        cmd.arg("-D").arg(self.dir.path().join("data"));
        cmd
    }

    fn pg_ctl_stop(&self) -> Result<(), String> {
        run(
            self.pg_ctl().args(["-m", "immediate", "-w", "stop"]),
            "pg_ctl stop",
        )
    }

    fn pg_ctl_start(&mut self, port: u16) -> Result<(), String> {
        let (dir, log) = (self.dir.path(), self.dir.path().join("postgres.log"));
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.display()
        );
        let mut start = self.pg_ctl();
        start
            .arg("-l")
            .arg(&log)
            .args(["-o", &options, "-w", "-t", "60", "start"]);
        run(&mut start, &format!("pg_ctl start on port {port}"))
            .map_err(|e| format!("{e}{}", read_log(&log)))?;
        self.running = true;
        Ok(())
    }
}

impl Drop for ExtraPostgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self.pg_ctl_stop();
        }
    }
}

/// A PostgreSQL binary, run as the postgres user when we are root.
fn pg_command(bin: &Path, program: &str, cwd: &Path) -> Command {
    let program = bin.join(program);
    let mut cmd = match is_root() {
        true => Command::new("runuser"),
        false => Command::new(&program),
    };
    if is_root() {
        cmd.args(["-u", "postgres", "--"]).arg(program);
    }
    cmd.current_dir(cwd).stdin(Stdio::null());
    cmd
}

/// PostgreSQL refuses to run as root: as root, hand the 0700 dir to postgres.
fn give_to_postgres(dir: &Path) {
    if is_root() {
        let mut chown = Command::new("chown");
        chown.arg("postgres:postgres").arg(dir);
        run(&mut chown, "chown postgres:postgres").unwrap_or_else(|e| panic!("{e}"));
    }
}

fn is_root() -> bool {
    fs::metadata("/proc/self").expect("stat /proc/self").uid() == 0
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding an initdb.
fn pg_bin_dir() -> PathBuf {
    fs::read_dir("/usr/lib/postgresql")
        .expect("read /usr/lib/postgresql (is PostgreSQL installed?)")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
        .expect("no /usr/lib/postgresql/<version>/bin/initdb found")
}

/// A private Redis Cluster: three masters and three replicas with a 2 s
/// node timeout (a killed master's replica takes over in about 4 s), each
/// on a free port whose cluster-bus port (+10000) is free too.
pub struct ExtraCluster {
    nodes: Vec<ExtraRedis>,
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub master: bool,
    pub failed: bool,
    /// Slot ranges served (masters).
    pub slots: Vec<(u16, u16)>,
}

impl ExtraCluster {
    pub fn start() -> Self {
        let mut errors = Vec::new();
        for _ in 0..3 {
            let ports = cluster_ports(6);
            let mut nodes = Vec::new();
            for &port in &ports {
                let dir = temp_dir("tally-cluster-");
                let args: Vec<String> = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                    // A replica syncs at once (not 5 s later): one that has
                    // never synced cannot take over.
                    "--repl-diskless-sync-delay",
                    "0",
                    "--cluster-config-file",
                ]
                .iter()
                .map(|s| s.to_string())
                .chain([dir.path().join("nodes.conf").display().to_string()])
                .collect();
                match spawn_redis(port, dir.path(), &args) {
                    Ok(child) => nodes.push(ExtraRedis {
                        port,
                        dir,
                        child: Some(child),
                        args,
                    }),
                    Err(e) => errors.push(e),
                }
            }
            if nodes.len() < 6 {
                continue;
            }
            let mut create = Command::new("redis-cli");
            create.arg("--cluster").arg("create");
            create.args(ports.iter().map(|p| format!("127.0.0.1:{p}")));
            create.args(["--cluster-replicas", "1", "--cluster-yes"]);
            if let Err(e) = run(&mut create, "redis-cli --cluster create") {
                errors.push(e);
                continue;
            }
            let cluster = ExtraCluster { nodes };
            cluster.wait_healthy(3);
            return cluster;
        }
        panic!(
            "could not start a private Redis Cluster:\n{}",
            errors.join("\n")
        );
    }

    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes[..3]
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The cluster as a live node sees it.
    pub fn topology(&self) -> Vec<ClusterNode> {
        for node in &self.nodes {
            if node.child.is_none() {
                continue;
            }
            if let Ok(text) = cli(node.port, &["cluster", "nodes"]) {
                return parse_cluster_nodes(&text);
            }
        }
        panic!("no node of the private cluster answers CLUSTER NODES");
    }

    /// `redis-cli` against every live node: `(port, reply)`.
    pub fn on_each(&self, args: &[&str]) -> Vec<(u16, String)> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| (n.port, cli(n.port, args).unwrap_or_else(|e| e)))
            .collect()
    }

    /// The slot of a key (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u16 {
        let port = self.live_port();
        cli(port, &["cluster", "keyslot", key])
            .unwrap_or_else(|e| panic!("{e}"))
            .trim()
            .parse()
            .expect("a slot number")
    }

    /// The master serving `slot`.
    pub fn master_of(&self, slot: u16) -> ClusterNode {
        self.topology()
            .into_iter()
            .find(|n| n.master && !n.failed && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .unwrap_or_else(|| panic!("no live master serves slot {slot}"))
    }

    fn live_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.child.is_some())
            .map(|n| n.port)
            .expect("a live node")
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port);
        node.expect("a node of this cluster").kill();
    }

    /// Starts a killed node again on its port and nodes.conf: it rejoins
    /// (a former master as a replica of the master that replaced it).
    pub fn restart(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port);
        node.expect("a node of this cluster").restart();
    }

    /// Waits until every slot is served, the state is ok, and
    /// `with_replicas` masters have a replica that finished its sync.
    pub fn wait_healthy(&self, with_replicas: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let info = cli(self.live_port(), &["cluster", "info"]).unwrap_or_default();
            let topology = self.topology();
            let masters_with_replica = topology
                .iter()
                .filter(|m| m.master && !m.failed && !m.slots.is_empty())
                .filter(|m| {
                    cli(m.port, &["info", "replication"]).is_ok_and(|r| r.contains("state=online"))
                })
                .count();
            if info.contains("cluster_state:ok")
                && info.contains("cluster_slots_ok:16384")
                && masters_with_replica >= with_replicas
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the private cluster is not healthy after 60 s:\n{info}\n{topology:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a node other than `old` (a killed master) serves `slot`
    /// and the cluster is ok again: its replica was promoted.
    pub fn wait_failover(&self, slot: u16, old: &ClusterNode) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let serving = self.topology().into_iter().find(|n| {
                n.master && !n.failed && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
            });
            if serving.is_some_and(|n| n.id != old.id) {
                break;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| read_log(&n.dir.path().join("redis.log")))
                    .collect();
                panic!(
                    "no replica took over slot {slot} from {} within 60 s: {:#?}\n{}",
                    old.port,
                    self.topology(),
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_healthy(0);
    }

    /// Moves one slot from its master to `to` the way `redis-cli --cluster
    /// reshard` does (IMPORTING/MIGRATING, MIGRATE key by key, SETSLOT
    /// NODE), one key every `pause` so that clients meet ASK redirections
    /// and TRYAGAIN for a while.
    pub fn migrate_slot(&self, slot: u16, to: &ClusterNode, pause: Duration) {
        let from = self.master_of(slot);
        assert_ne!(from.id, to.id, "slot {slot} is already on {}", to.port);
        let s = slot.to_string();
        let ok = |r: Result<String, String>| r.unwrap_or_else(|e| panic!("{e}"));
        ok(cli(
            to.port,
            &["cluster", "setslot", &s, "importing", &from.id],
        ));
        ok(cli(
            from.port,
            &["cluster", "setslot", &s, "migrating", &to.id],
        ));
        loop {
            let keys = ok(cli(from.port, &["cluster", "getkeysinslot", &s, "10"]));
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            for key in keys {
                ok(cli(
                    from.port,
                    &[
                        "migrate",
                        "127.0.0.1",
                        &to.port.to_string(),
                        key,
                        "0",
                        "5000",
                        "REPLACE",
                    ],
                ));
                std::thread::sleep(pause);
            }
        }
        for node in self.topology().iter().filter(|n| n.master && !n.failed) {
            ok(cli(node.port, &["cluster", "setslot", &s, "node", &to.id]));
        }
    }
}

/// `redis-cli -p port args…`; Err on a failed run or an error reply.
fn cli(port: u16, args: &[&str]) -> Result<String, String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map_err(|e| format!("spawn redis-cli: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || text.starts_with("ERR") || text.starts_with("(error)") {
        return Err(format!("redis-cli -p {port} {args:?}: {text}"));
    }
    Ok(text)
}

fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let port = f[1].split(['@', ':']).nth(1)?.parse().ok()?;
            let flags = f[2];
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|a| (a, a)),
                })
                .collect();
            Some(ClusterNode {
                id: f[0].to_owned(),
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail"),
                slots,
            })
        })
        .collect()
}

/// `n` free ports whose cluster-bus ports (+10000) are free too.
fn cluster_ports(n: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    let mut held = Vec::new();
    while ports.len() < n {
        let port = rand::random_range(20_000..50_000u16);
        if ports.contains(&port) {
            continue;
        }
        if let (Ok(a), Ok(b)) = (
            TcpListener::bind(("127.0.0.1", port)),
            TcpListener::bind(("127.0.0.1", port + 10_000)),
        ) {
            held.push((a, b));
            ports.push(port);
        }
    }
    ports
}
