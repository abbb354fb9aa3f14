//! `ditail batch` under a real Slurm: a one-node cluster (Debian's `slurm-wlm`: slurmctld
//! and slurmd, munge for authentication) started by this test with a configuration of its
//! own, then:
//!
//! - `sbatch --array=0-3` of a 12-row manifest: every row written once (one task's log
//!   names it), each output equal to a single-process run's;
//! - a task requeued mid-row (`scontrol requeue`, what preemption and a lost node do):
//!   it runs again and finishes its rows, the outputs equal the reference;
//! - the same shard submitted twice at once: each row still written once.
//!
//! Needs `apt-get install slurm-wlm munge` and root (slurmd runs jobs as their user);
//! `.ci/run` installs them. Set `DITAIL_SKIP_SLURM=1` to skip where they cannot run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixtures, model_dir};

/// A one-node Slurm cluster of this test's own (ports, state, logs in a temp dir).
struct Cluster {
    dir: PathBuf,
    daemons: Vec<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn hostname() -> String {
    let out = Command::new("hostname").arg("-s").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Cluster {
    fn start(dir: &Path) -> Self {
        let host = hostname();
        for d in ["state", "spool"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let conf = format!(
            "ClusterName=ditailtest\nSlurmctldHost={host}\nSlurmUser=root\nSlurmdUser=root\n\
             AuthType=auth/munge\nStateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
             SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
             ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nSelectType=select/cons_tres\n\
             SelectTypeParameters=CR_CPU\nReturnToService=2\nMpiDefault=none\n\
             SlurmctldPort={ctld}\nSlurmdPort={slurmd}\nJobAcctGatherType=jobacct_gather/none\n\
             AccountingStorageType=accounting_storage/none\nSlurmctldLogFile={d}/slurmctld.log\n\
             SlurmdLogFile={d}/slurmd.log\nNodeName={host} CPUs=2 State=UNKNOWN\n\
             PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
            d = dir.display(),
            ctld = free_port(),
            slurmd = free_port(),
        );
        std::fs::write(dir.join("slurm.conf"), conf).unwrap();
        // munged: one per machine; started if none runs (it refuses root without --force).
        let running = Command::new("pgrep")
            .args(["-x", "munged"])
            .stdout(Stdio::null())
            .status();
        if !running.is_ok_and(|s| s.success()) {
            std::fs::create_dir_all("/run/munge").unwrap();
            let s = Command::new("munged").arg("--force").status().unwrap();
            assert!(s.success(), "munged did not start");
        }
        let daemon = |bin: &str, args: &[&str]| {
            Command::new(bin)
                .args(args)
                .env("SLURM_CONF", dir.join("slurm.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{bin}: {e}"))
        };
        let mut c = Self {
            dir: dir.to_path_buf(),
            daemons: Vec::new(),
        };
        c.daemons.push(daemon("slurmctld", &["-D", "-i"]));
        std::thread::sleep(Duration::from_secs(1));
        c.daemons.push(daemon("slurmd", &["-D", "-N", &host]));
        c.wait("the node to be idle", 60, |c| c.sinfo().contains("idle"));
        c
    }

    fn cmd(&self, bin: &str) -> Command {
        let mut cmd = Command::new(bin);
        cmd.env("SLURM_CONF", self.dir.join("slurm.conf"));
        cmd
    }

    fn sinfo(&self) -> String {
        let out = self.cmd("sinfo").args(["-h", "-o", "%T"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait(&self, what: &str, secs: u64, mut done: impl FnMut(&Self) -> bool) {
        let start = Instant::now();
        while !done(self) {
            if start.elapsed() > Duration::from_secs(secs) {
                let log =
                    std::fs::read_to_string(self.dir.join("slurmctld.log")).unwrap_or_default();
                panic!("waited {secs} s for {what}; slurmctld.log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Submits a batch script; returns the job id.
    fn sbatch(&self, args: &[&str], script: &str) -> String {
        let out = self
            .cmd("sbatch")
            .args(["--parsable"])
            .args(args)
            .args(["--wrap", script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sbatch: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap()
            .to_string()
    }

    /// The state squeue gives `job` ("" once it has left the queue).
    fn state(&self, job: &str) -> String {
        let out = self
            .cmd("squeue")
            .args(["-h", "-j", job, "-o", "%T"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Whether any task of `job` is still queued or running.
    fn active(&self, job: &str) -> bool {
        let out = self.cmd("squeue").args(["-h", "-j", job]).output().unwrap();
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

fn manifest(dir: &Path, rows: usize, steps: u32) -> PathBuf {
    std::fs::copy(
        fixtures().join("pipeline/content.png"),
        dir.join("content.png"),
    )
    .unwrap();
    let (a, b) = (model_dir("tiny-a"), model_dir("tiny-b"));
    let mut text = String::from("id,image,prompt,source,target,inv_steps,steps,size\n");
    for i in 1..=rows {
        let target = if i % 2 == 0 { &b } else { &a };
        text.push_str(&format!(
            "r{i:02},content.png,a cat {i},{},{},{steps},{steps},64\n",
            a.display(),
            target.display()
        ));
    }
    let path = dir.join("jobs.csv");
    std::fs::write(&path, text).unwrap();
    path
}

/// The shell line a task runs: ditail with the test's environment.
fn batch_line(manifest: &Path, out: &Path, home: &Path) -> String {
    format!(
        "XDG_CACHE_HOME={h}/cache HF_HUB_OFFLINE=1 HF_HOME={h}/hf exec {bin} --backend cpu batch {m} -o {o}",
        h = home.display(),
        bin = env!("CARGO_BIN_EXE_ditail"),
        m = manifest.display(),
        o = out.display(),
    )
}

/// The reference: the whole manifest in one process, outside Slurm.
fn single_process(manifest: &Path, out: &Path, home: &Path) {
    let run = Command::new(env!("CARGO_BIN_EXE_ditail"))
        .args(["--backend", "cpu", "batch"])
        .arg(manifest)
        .arg("-o")
        .arg(out)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", home.join("hf"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// The ids each task's log says it ran (`[k/n] id` lines), over every log in `dir`.
fn ran(dir: &Path, prefix: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        for line in std::fs::read_to_string(e.path()).unwrap().lines() {
            if let Some(rest) = line.split("] ").nth(1)
                && line.contains('[')
                && !rest.contains(':')
            {
                ids.push(rest.trim().to_string());
            }
        }
    }
    ids.sort();
    ids
}

fn pngs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".png"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn batches_run_under_a_real_slurm() {
    if std::env::var_os("DITAIL_SKIP_SLURM").is_some() {
        eprintln!("DITAIL_SKIP_SLURM is set: skipped");
        return;
    }
    assert!(
        Command::new("slurmctld").arg("-V").output().is_ok(),
        "slurmctld not found (install it: apt-get install slurm-wlm munge; or set DITAIL_SKIP_SLURM=1)"
    );
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cluster = Cluster::start(&dir.join("slurm"));
    eprintln!("cluster up in {:.1} s", started.elapsed().as_secs_f64());

    // The reference: one process, every row.
    let m = manifest(dir, 12, 2);
    let reference = dir.join("reference");
    single_process(&m, &reference, dir);
    let all = pngs(&reference);
    assert_eq!(all.len(), 12);

    // An array of 4: shards from the array's variables, every row once, equal outputs.
    let out_dir = dir.join("array");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let t0 = Instant::now();
    let job = cluster.sbatch(
        &[
            "--array=0-3",
            "-o",
            &format!("{}/array-%a.log", logs.display()),
        ],
        &batch_line(&m, &out_dir, dir),
    );
    cluster.wait("the array to finish", 300, |c| !c.active(&job));
    eprintln!(
        "array of 4 over 12 rows: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(pngs(&out_dir), all, "every row's output");
    let ids: Vec<String> = (1..=12).map(|i| format!("r{i:02}")).collect();
    assert_eq!(
        ran(&logs, "array-"),
        ids,
        "each row run by exactly one task"
    );
    // Each task's summary, merged by `--status`.
    let status = Command::new(env!("CARGO_BIN_EXE_ditail"))
        .args(["batch"])
        .arg(&m)
        .arg("-o")
        .arg(&out_dir)
        .arg("--status")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{said}");
    assert!(
        said.contains("12 rows: 12 done, 0 failed, 0 missing (4 shard summaries"),
        "{said}"
    );
    for name in &all {
        assert_eq!(
            std::fs::read(out_dir.join(name)).unwrap(),
            std::fs::read(reference.join(name)).unwrap(),
            "{name}: the array's output differs from the single process's"
        );
    }

    // A task requeued mid-row (preemption, a lost node): it runs again and finishes.
    std::fs::create_dir_all(dir.join("slow")).unwrap();
    let slow = manifest(&dir.join("slow"), 3, 40);
    let slow_ref = dir.join("slow-reference");
    single_process(&slow, &slow_ref, dir);
    let slow_out = dir.join("slow-out");
    let log = dir.join("slow.log");
    let job = cluster.sbatch(
        &[
            "--requeue",
            "--open-mode=append",
            "-o",
            &log.display().to_string(),
        ],
        &batch_line(&slow, &slow_out, dir),
    );
    cluster.wait("the first row to start", 120, |_| {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("] r01"))
    });
    let t_requeue = Instant::now();
    let s = cluster
        .cmd("scontrol")
        .args(["requeue", &job])
        .status()
        .unwrap();
    assert!(s.success(), "scontrol requeue");
    // Slurm holds a requeued job back for two minutes once it is pending again (its begin
    // time moves); now is fine here.
    cluster.wait("the requeued job to be pending", 120, |c| {
        c.state(&job) == "PENDING"
    });
    let s = cluster
        .cmd("scontrol")
        .args(["update", &format!("JobId={job}"), "StartTime=now"])
        .status()
        .unwrap();
    assert!(s.success(), "scontrol update StartTime");
    cluster.wait("the requeued job to finish", 300, |c| !c.active(&job));
    eprintln!(
        "requeued mid-row, finished {:.1} s later",
        t_requeue.elapsed().as_secs_f64()
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    // Killed inside r01 (no summary from the first run), which the second run redid.
    assert_eq!(
        log_text.matches("batch summary").count(),
        1,
        "one run finished: {log_text}"
    );
    assert_eq!(
        log_text.matches("] r01").count(),
        2,
        "r01 started twice: {log_text}"
    );
    assert_eq!(pngs(&slow_out), pngs(&slow_ref));
    for name in pngs(&slow_ref) {
        assert_eq!(
            std::fs::read(slow_out.join(&name)).unwrap(),
            std::fs::read(slow_ref.join(&name)).unwrap(),
            "{name} after the requeue"
        );
    }
    assert!(
        !std::fs::read_dir(&slow_out)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".part")),
        "no partial file left"
    );

    // The same shard twice at once: each row is written by one of them only.
    let twice = dir.join("twice");
    let jobs: Vec<String> = (0..2)
        .map(|k| {
            cluster.sbatch(
                &["-o", &format!("{}/twice-{k}.log", logs.display())],
                &batch_line(&slow, &twice, dir),
            )
        })
        .collect();
    cluster.wait("both copies to finish", 300, |c| {
        jobs.iter().all(|j| !c.active(j))
    });
    let written: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("twice-"))
        .flat_map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap()
                .lines()
                .filter(|l| l.contains("] r0") && !l.contains("skipped"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut ids: Vec<&str> = written
        .iter()
        .map(|l| l.rsplit("] ").next().unwrap().trim())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["r01", "r02", "r03"],
        "each row written once: {written:?}"
    );
    assert_eq!(pngs(&twice), pngs(&slow_ref));
    eprintln!("whole test: {:.1} s", started.elapsed().as_secs_f64());
}
