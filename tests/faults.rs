//! Process faults against the real `ditail` binary (CPU backend, tiny fixture models):
//! `kill -9` at seeded random points of a batch, then a rerun; a full disk and a read-only
//! output folder (file systems the test mounts: these tests need root, as CI has); and two
//! batches on the same rows at once. In every case the end state equals an uninterrupted
//! run's, byte for byte, and no partial or temporary file is left visible.
//!
//! `DITAIL_FAULT_SEED=<n>` replays other kill points; `--nocapture` prints the figures.

#![cfg(unix)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn model(name: &str) -> String {
    fixtures().join("models").join(name).display().to_string()
}

/// Rows in the manifest every test runs: r1..r4, targets alternating between the models.
const ROWS: usize = 4;

/// The manifest (JSON Lines) in `dir`, with absolute paths, so that every test's outputs
/// are the same bytes as the reference's.
fn manifest(dir: &Path) -> PathBuf {
    let (a, b) = (model("tiny-a"), model("tiny-b"));
    let content = fixtures().join("pipeline/content.png");
    let mut text = String::new();
    for i in 1..=ROWS {
        let row = serde_json::json!({
            "id": format!("r{i}"),
            "image": content.display().to_string(),
            "prompt": format!("a photo of a cat, take {i}"),
            "source": a,
            "target": if i % 2 == 0 { &b } else { &a },
            "size": 64, "inv_steps": 3, "steps": 3,
        });
        text += &format!("{row}\n");
    }
    let path = dir.join("jobs.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

/// `ditail --backend cpu batch <manifest> -o <out> [extra]` with a private cache, offline.
fn batch(home: &Path, manifest: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ditail"));
    cmd.args(["--backend", "cpu", "batch"])
        .arg(manifest)
        .arg("-o")
        .arg(out)
        .args(extra)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", home.join("hf"));
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\n{}",
        out.status.code(),
        stderr(out)
    );
}

/// Every name in a folder (hidden ones too), sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// What ditail leaves only while it works: temporary files and output locks.
fn temporaries(dir: &Path) -> Vec<String> {
    files(dir)
        .into_iter()
        .filter(|f| f.starts_with(".ditail-") || f.ends_with(".part"))
        .collect()
}

/// An uninterrupted run: its outputs' bytes and how long it took.
struct Reference {
    files: BTreeMap<String, Vec<u8>>,
    secs: f64,
}

fn reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let tmp = TempDir::new().unwrap();
        let out = tmp.path().join("out");
        let start = Instant::now();
        let run = batch(tmp.path(), &manifest(tmp.path()), &out, &[])
            .output()
            .unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert_ok(&run);
        let files: BTreeMap<String, Vec<u8>> = files(&out)
            .into_iter()
            .map(|f| {
                let bytes = std::fs::read(out.join(&f)).unwrap();
                (f, bytes)
            })
            .collect();
        let names: Vec<String> = (1..=ROWS).map(|i| format!("r{i}.png")).collect();
        assert_eq!(files.keys().cloned().collect::<Vec<_>>(), names);
        Reference { files, secs }
    })
}

/// Fails unless every PNG in `dir` decodes and is the reference's file, byte for byte
/// (so it is complete and carries the same record); returns how many there are.
fn assert_pngs_match(dir: &Path, when: &str) -> usize {
    let reference = reference();
    let mut n = 0;
    for name in files(dir).into_iter().filter(|f| f.ends_with(".png")) {
        let bytes = std::fs::read(dir.join(&name)).unwrap();
        image::load_from_memory(&bytes)
            .unwrap_or_else(|e| panic!("{when}: {name} does not decode: {e}"));
        let expected = reference
            .files
            .get(&name)
            .unwrap_or_else(|| panic!("{when}: unexpected file {name}"));
        assert!(
            &bytes == expected,
            "{when}: {name} differs from the uninterrupted run's"
        );
        n += 1;
    }
    n
}

/// Fails unless `dir` holds exactly the reference's outputs, equal, and nothing else.
fn assert_complete(dir: &Path, when: &str) {
    let names: Vec<String> = reference().files.keys().cloned().collect();
    assert_eq!(files(dir), names, "{when}");
    assert_eq!(assert_pngs_match(dir, when), ROWS);
}

/// splitmix64: a tiny deterministic generator for the kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn seed() -> u64 {
    std::env::var("DITAIL_FAULT_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0x00D1_7A11_5EED)
}

/// Where a killed run was when the signal came, from its log.
fn phase(log: &str, finished: bool) -> String {
    let wrote = log.matches("\nwrote ").count() + usize::from(log.starts_with("wrote "));
    if finished {
        "finished before the kill".into()
    } else if !log.contains("[1/") {
        "before the first row (checking, loading)".into()
    } else if wrote == ROWS {
        format!("after all {ROWS} outputs were written")
    } else {
        format!("in row {} of {ROWS}", wrote + 1)
    }
}

/// Kills `child` with SIGKILL (std sends SIGKILL on Unix) and reaps it; whether it was
/// still running.
fn kill_9(child: &mut Child) -> bool {
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    running
}

/// 24 trials: a batch of 4 rows is killed with SIGKILL at a seeded random time in
/// [0, the uninterrupted run's time] (20 trials), or the moment one of its temporary
/// files appears (4 trials, the write window); right after the kill every PNG present is
/// complete and equal to the uninterrupted run's; a rerun completes the batch, removes what
/// the killed run left (temporary files, locks) and every output equals the uninterrupted
/// run's, byte for byte.
#[test]
fn kill_9_at_seeded_random_points_then_a_rerun_completes_the_batch() {
    const TRIALS: usize = 24;
    let seed = seed();
    println!("kill -9 trials: seed {seed} (DITAIL_FAULT_SEED={seed} replays them)");
    let mut rng = Rng(seed);
    let reference = reference();
    let span_ms = (reference.secs * 1000.0) as u64;
    let tmp = TempDir::new().unwrap();
    let manifest = manifest(tmp.path());
    let mut phases: BTreeMap<String, usize> = BTreeMap::new();
    let (mut parts_left, mut locks_left, mut trials_with_parts) = (0, 0, 0);
    let (mut rows_rerun, mut pngs_at_kill) = (0, 0);
    for trial in 0..TRIALS {
        let when = format!("seed {seed}, trial {trial}");
        let out = tmp.path().join(format!("out{trial:02}"));
        let log_path = tmp.path().join(format!("trial{trial:02}.log"));
        let targeted = trial % 6 == 5;
        let delay = Duration::from_millis(rng.below(span_ms));
        let mut child = batch(tmp.path(), &manifest, &out, &[])
            .stdout(Stdio::null())
            .stderr(File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        if targeted {
            // Kill inside the write window: as soon as a temporary file is seen.
            let start = Instant::now();
            while child.try_wait().unwrap().is_none()
                && start.elapsed() < Duration::from_secs(20)
                && !files(&out).iter().any(|f| f.ends_with(".part"))
            {
                std::hint::spin_loop();
            }
        } else {
            std::thread::sleep(delay);
        }
        let running = kill_9(&mut child);
        let log = std::fs::read_to_string(&log_path).unwrap();
        let phase = if targeted {
            format!("write window: {}", phase(&log, !running))
        } else {
            phase(&log, !running)
        };
        *phases.entry(phase.clone()).or_default() += 1;

        // No partial output is ever visible: every PNG there is complete.
        let present = assert_pngs_match(&out, &format!("{when}, after the kill"));
        pngs_at_kill += present;
        let left = temporaries(&out);
        let parts = left.iter().filter(|f| f.ends_with(".part")).count();
        parts_left += parts;
        locks_left += left.iter().filter(|f| f.ends_with(".lock")).count();
        trials_with_parts += usize::from(parts > 0);
        println!(
            "trial {trial:2}: {} -> {present} PNG(s) complete, left {left:?}",
            if targeted {
                "kill at the first temporary file".to_string()
            } else {
                format!("kill after {} ms", delay.as_millis())
            },
        );

        // The rerun finishes the rest and cleans up.
        let rerun = batch(tmp.path(), &manifest, &out, &[]).output().unwrap();
        assert_ok(&rerun);
        let err = stderr(&rerun);
        assert!(
            err.contains(&format!(
                "batch summary: {} done, {present} skipped",
                ROWS - present
            )),
            "{when}: {err}"
        );
        if parts > 0 {
            assert!(err.contains("removed"), "{when}: {err}");
        }
        rows_rerun += ROWS - present;
        assert_complete(&out, &format!("{when}, after the rerun"));
    }
    println!(
        "kill -9: {TRIALS} trials (seed {seed}); killed {phases:?}; {pngs_at_kill} PNGs present \
         at the kills, all complete and equal; {parts_left} temporary file(s) left in \
         {trials_with_parts} trial(s) and {locks_left} lock file(s), all removed by the \
         reruns; {rows_rerun} rows finished by the reruns; every final output equal to the \
         uninterrupted run's"
    );
    assert!(
        trials_with_parts > 0,
        "no kill landed in a write window, so the cleanup was not exercised: {phases:?}"
    );
}

/// A rerun removes stale temporary files and unheld locks, but never a file a live process
/// holds: a temporary file the test keeps locked stays, and a row whose lock the test holds
/// is skipped ("another process is writing") and not counted as failed.
#[test]
fn stale_files_are_removed_and_a_live_processs_are_left_alone() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let plant = |name: &str| {
        let f = File::create(out.join(name)).unwrap();
        std::io::Write::write_all(&mut &f, b"\x89PNG partial").unwrap();
        f.set_modified(hour_ago).unwrap();
        f
    };
    drop(plant(".ditail-dead01.part"));
    drop(plant(".ditail-checkold1"));
    drop(plant(".ditail-r2.png.lock"));
    let live_part = plant(".ditail-live01.part");
    live_part.lock().unwrap();
    let live_lock = plant(".ditail-r3.png.lock");
    live_lock.lock().unwrap();

    let manifest = manifest(tmp.path());
    let run = batch(tmp.path(), &manifest, &out, &[]).output().unwrap();
    assert_ok(&run);
    let err = stderr(&run);
    assert!(
        err.contains(
            "removed 3 temporary file(s) left in {} by an interrupted run: .ditail-checkold1, \
             .ditail-dead01.part, .ditail-r2.png.lock"
                .replace("{}", &out.display().to_string())
                .as_str()
        ),
        "{err}"
    );
    assert!(
        err.contains("r3: skipped, another process is writing")
            && err.contains("3 done, 0 skipped (already complete), 0 failed, 1 skipped (another process was writing them: r3)"),
        "{err}"
    );
    let mut expected = vec![
        ".ditail-live01.part".to_string(),
        ".ditail-r3.png.lock".to_string(),
    ];
    expected.extend(["r1.png", "r2.png", "r4.png"].map(String::from));
    assert_eq!(files(&out), expected);
    assert_eq!(assert_pngs_match(&out, "with live files"), 3);

    // Once their owner is gone, the next run takes them.
    drop((live_part, live_lock));
    let rerun = batch(tmp.path(), &manifest, &out, &[]).output().unwrap();
    assert_ok(&rerun);
    let err = stderr(&rerun);
    assert!(
        err.contains(".ditail-live01.part, .ditail-r3.png.lock")
            && err.contains("1 done, 3 skipped"),
        "{err}"
    );
    assert_complete(&out, "after the owner let go");
}

/// Two batches on the same manifest and shard at once, in 3 rounds with seeded head starts
/// for the first: both succeed, every output is written exactly once (by one of them), each
/// process accounts for every row (written, or skipped saying why), and the end state
/// equals one run's.
#[test]
fn two_batches_on_the_same_rows_write_each_output_once() {
    let seed = seed();
    let mut rng = Rng(seed ^ 0xC0C0);
    let tmp = TempDir::new().unwrap();
    let manifest = manifest(tmp.path());
    let span_ms = (reference().secs * 500.0) as u64;
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for round in 0..3 {
        let out = tmp.path().join(format!("out{round}"));
        let head_start = if round == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(rng.below(span_ms))
        };
        let spawn = || {
            batch(tmp.path(), &manifest, &out, &["--shard", "0/1"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let first = spawn();
        std::thread::sleep(head_start);
        let second = spawn();
        let runs = [
            first.wait_with_output().unwrap(),
            second.wait_with_output().unwrap(),
        ];
        let when = format!("seed {seed}, round {round}, head start {head_start:?}");
        let mut writes: BTreeMap<String, usize> = BTreeMap::new();
        for run in &runs {
            assert_ok(run);
            let err = stderr(run);
            // Each process accounts for every row: written, or skipped and said why.
            let mut accounted = 0;
            for line in err.lines() {
                if let Some(path) = line.strip_prefix("wrote ") {
                    let name = Path::new(path).file_name().unwrap().to_string_lossy();
                    *writes.entry(name.into_owned()).or_default() += 1;
                    accounted += 1;
                }
                for what in ["another process is writing", "another process completed it"] {
                    if line.contains(what) {
                        *tally.entry(what).or_default() += 1;
                        accounted += 1;
                    }
                }
                let done_before = line
                    .split(" to run, ")
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next()?.parse::<usize>().ok());
                if let Some(n) = done_before {
                    *tally.entry("already complete at its start").or_default() += n;
                    accounted += n;
                }
            }
            assert_eq!(accounted, ROWS, "{when}: {err}");
        }
        let expected: BTreeMap<String, usize> =
            reference().files.keys().map(|k| (k.clone(), 1)).collect();
        assert_eq!(
            writes,
            expected,
            "{when}: each output written once\n{}\n{}",
            stderr(&runs[0]),
            stderr(&runs[1])
        );
        assert_complete(&out, &when);
    }
    println!(
        "two batches at once: 3 rounds (seed {seed}), every output written exactly once; the \
         other process's rows: {tally:?}"
    );
}

#[cfg(target_os = "linux")]
/// A mounted file system, unmounted when dropped.
struct Mount(PathBuf);

#[cfg(target_os = "linux")]
impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[cfg(target_os = "linux")]
fn uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|u| u.split_whitespace().next().unwrap_or("?").to_string())
            })
        })
        .unwrap_or_else(|| "?".into())
}

#[cfg(target_os = "linux")]
/// Mounts at `at` (`mount <args> <at>`), unmounted when the guard drops.
fn mount(args: &[&str], at: &Path) -> Mount {
    run_mount(args, at);
    Mount(at.to_path_buf())
}

#[cfg(target_os = "linux")]
/// Makes the bind mount at `at` read-only (the mount's guard unmounts it).
fn remount_read_only(at: &Path) {
    run_mount(&["-o", "remount,bind,ro"], at);
}

#[cfg(target_os = "linux")]
/// Runs `mount <args> <at>`; fails the test, saying it needs root, when that cannot be done.
fn run_mount(args: &[&str], at: &Path) {
    let out = Command::new("mount").args(args).arg(at).output();
    match out {
        Ok(o) if o.status.success() => {}
        other => panic!(
            "this test mounts file systems and needs root (CI runs as root); running as uid {}: \
             `mount {} {}` failed: {}",
            uid(),
            args.join(" "),
            at.display(),
            match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            }
        ),
    }
}

#[cfg(target_os = "linux")]
/// Fills the file system of `dir` with `filler` and then frees `free` bytes (whole pages).
fn fill(dir: &Path, free: u64) -> PathBuf {
    let path = dir.join("filler");
    let mut f = File::create(&path).unwrap();
    let chunk = vec![0xA5u8; 4096];
    loop {
        match std::io::Write::write(&mut f, &chunk) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(free)).unwrap();
    path
}

/// Disk full (a 200 KiB tmpfs with room for one output): the row that fits is written, the
/// others fail with "No space left on device" while the run goes on, the exit code is 1
/// with "3 of 4 rows failed", no partial or temporary file is left; once there is room a
/// rerun writes the rest. A single `transfer` to the full disk fails the same way.
#[cfg(target_os = "linux")]
#[test]
fn disk_full_fails_the_rows_that_do_not_fit_and_the_run_goes_on() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("small");
    std::fs::create_dir(&out).unwrap();
    let _mount = mount(&["-t", "tmpfs", "-o", "size=200k", "tmpfs"], &out);
    let largest = reference().files.values().map(Vec::len).max().unwrap() as u64;
    // Room for one output (its pages) and one page more, not for two.
    let filler = fill(&out, largest.div_ceil(4096) * 4096 + 4096);
    let manifest = manifest(tmp.path());

    let run = batch(tmp.path(), &manifest, &out, &[]).output().unwrap();
    let err = stderr(&run);
    // 64 + the rows that failed: Slurm's accounting shows how many.
    assert_eq!(run.status.code(), Some(64 + 3), "{err}");
    assert!(
        err.contains("1 done, 0 skipped (already complete), 3 failed")
            && err.contains("3 of 4 rows failed")
            && err.matches("No space left on device").count() >= 3,
        "{err}"
    );
    let pngs = assert_pngs_match(&out, "disk full");
    assert_eq!(pngs, 1, "{:?}", files(&out));
    assert_eq!(temporaries(&out), Vec::<String>::new());
    println!(
        "disk full: 1 row written, 3 failed with: {}",
        err.lines()
            .find(|l| l.starts_with("  failed"))
            .unwrap_or_default()
    );

    // One transfer to the full disk: exit 1, the reason, nothing written.
    let single = out.join("single.png");
    let transfer = Command::new(env!("CARGO_BIN_EXE_ditail"))
        .args(["--backend", "cpu", "transfer"])
        .arg(fixtures().join("pipeline/content.png"))
        .args(["--prompt", "a cat", "--source", &model("tiny-a")])
        .args(["--size", "64", "--inv-steps", "3", "--steps", "3", "-o"])
        .arg(&single)
        .env("XDG_CACHE_HOME", tmp.path().join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let terr = stderr(&transfer);
    assert_eq!(transfer.status.code(), Some(1), "{terr}");
    assert!(terr.contains("No space left on device"), "{terr}");
    assert!(!single.exists());
    assert_eq!(temporaries(&out), Vec::<String>::new());
    println!(
        "disk full, transfer: exit 1: {}",
        terr.lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or_default()
    );

    // With room again, a rerun writes the rest.
    std::fs::remove_file(filler).unwrap();
    let rerun = batch(tmp.path(), &manifest, &out, &[]).output().unwrap();
    assert_ok(&rerun);
    assert!(
        stderr(&rerun).contains("3 done, 1 skipped"),
        "{}",
        stderr(&rerun)
    );
    assert_complete(&out, "after the disk had room again");
}

/// A read-only output folder (a read-only bind mount over it; root ignores mode bits):
/// before the run, `batch` refuses it up front (exit 2, nothing runs); made read-only in the
/// middle of a run (after the first output), the remaining rows fail with "Read-only file
/// system", the run goes on to the end and exits 1, and nothing partial is left; once
/// writable again, a rerun removes the lock the failed row could not and writes the rest.
#[cfg(target_os = "linux")]
#[test]
fn read_only_output_folder_is_refused_up_front_and_fails_rows_mid_run() {
    let tmp = TempDir::new().unwrap();
    let manifest = manifest(tmp.path());
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    {
        let _bind = mount(&["--bind", out.to_str().unwrap()], &out);
        remount_read_only(&out);
        let run = batch(tmp.path(), &manifest, &out, &[]).output().unwrap();
        let err = stderr(&run);
        assert_eq!(run.status.code(), Some(2), "{err}");
        assert!(
            err.contains("cannot write in the output folder")
                && err.contains("Read-only file system"),
            "{err}"
        );
        println!(
            "read-only before the run: exit 2: {}",
            err.lines()
                .find(|l| l.starts_with("error"))
                .unwrap_or_default()
        );
    }
    assert!(files(&out).is_empty());

    // Read-only from the moment the first output appears.
    let child = batch(tmp.path(), &manifest, &out, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !files(&out).iter().any(|f| f.ends_with(".png")) {
        assert!(start.elapsed() < Duration::from_secs(60), "no output came");
        std::thread::sleep(Duration::from_millis(1));
    }
    let bind = mount(&["--bind", out.to_str().unwrap()], &out);
    remount_read_only(&out);
    let run = child.wait_with_output().unwrap();
    let err = stderr(&run);
    let failed = err.lines().filter(|l| l.starts_with("  failed")).count();
    assert_eq!(run.status.code(), Some(64 + failed as i32), "{err}");
    assert!(
        failed >= 1
            && err
                .lines()
                .filter(|l| l.starts_with("  failed"))
                .all(|l| l.contains("Read-only file system")),
        "{err}"
    );
    // Every PNG there is complete; what the failed rows could not remove (their locks, a
    // temporary file caught between write and rename) is hidden and goes with the rerun.
    let written = assert_pngs_match(&out, "read-only mid-run");
    assert_eq!(written + failed, ROWS, "{err}");
    println!(
        "read-only mid-run: {written} written, {failed} failed with: {}; left {:?}",
        err.lines()
            .find(|l| l.starts_with("  failed"))
            .unwrap_or_default(),
        temporaries(&out)
    );
    drop(bind);

    let rerun = batch(tmp.path(), &manifest, &out, &[]).output().unwrap();
    assert_ok(&rerun);
    assert!(
        stderr(&rerun).contains(&format!("{failed} done, {written} skipped")),
        "{}",
        stderr(&rerun)
    );
    assert_complete(&out, "after the folder was writable again");
}
