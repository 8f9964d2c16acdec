//! `ssbench qemu` end to end without a guest: a shell script stands in for
//! `qemu-system-riscv64`, plays the kernel's console (banner, prompt, the
//! server's listening line) and serves the forwarded port with a Linux server
//! (`ssbench server --model ceiling`). So the harness's whole path runs —
//! boots, loads, sweeps, targets, report, figures, shutdown — and a refusing
//! guest is reported in its own words. Asserts behaviour, never timings.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ssbench-qemu-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The console dialogue; `serve` is what the "guest" does after the command.
fn fake(dir: &Path, serve: &str) -> PathBuf {
    let path = dir.join("fake-qemu");
    let script = format!(
        r#"#!/bin/sh
case "$1" in --version) echo "QEMU emulator version 0.0-fake"; exit 0;; esac
echo $$ >> "$0.pids"
for a in "$@"; do case "$a" in user,*) fwd="$a";; esac; done
port=$(echo "$fwd" | sed -n 's/.*hostfwd=tcp:127\.0\.0\.1:\([0-9]*\)-:5555$/\1/p')
printf 'OpenSBI\r\n[kernel] SharedScheduler kernel: fake\r\nshell\r\n$ '
read -r cmd model prio workers
printf '%s %s %s %s\r\n' "$cmd" "$model" "$prio" "$workers"
{serve}
"#
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn qemu_bench(qemu: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ssbench"))
        .args([
            "qemu",
            "--quick",
            "--duration",
            "0.3s",
            "--connections",
            "1,4",
        ])
        .args(["--prio-harts", "1,2", "--models", "kcuc,ktut"])
        .arg("--qemu")
        .arg(qemu)
        .arg("--kernel")
        .arg(qemu) // any file: the fake does not read it
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("SSBENCH", env!("CARGO_BIN_EXE_ssbench"))
        .output()
        .unwrap()
}

/// A fake whose "guest" serves: the ceiling server on the forwarded port,
/// and the listening line once it is up.
fn serving_fake(dir: &Path) -> PathBuf {
    fake(
        dir,
        r#""$SSBENCH" server --model ceiling --listen "127.0.0.1:$port" |
while read -r l; do printf 'ssserver: %s listening on port 5555 (%s workers)\r\n' "$model" "$workers"; done"#,
    )
}

/// Every process the fake started is gone.
fn none_left(qemu: &Path) {
    let pids = std::fs::read_to_string(format!("{}.pids", qemu.display())).unwrap();
    for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
        let alive = Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "fake QEMU {pid} outlived the run");
    }
}

#[test]
fn the_harness_boots_drives_reports_and_stops_every_guest() {
    let d = dir("serves");
    let qemu = serving_fake(&d);
    let out = d.join("out");
    let run = qemu_bench(&qemu, &out, &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("(emulated)"), "{md}");
    assert!(
        md.contains("machine: "),
        "the host's description is missing"
    );
    assert!(md.contains("QEMU 0.0-fake TCG, -m 128M, 2 harts"), "{md}");
    for section in [
        "## Targets (emulated)",
        "## Boots",
        "## Figure 5 (emulated)",
        "## Figure 6 (emulated)",
        "## Figure 7 (emulated)",
        "## Throughput (emulated): back to back",
        "**Not measured**",
        "p50 latency, ms",
    ] {
        assert!(md.contains(section), "{section} missing");
    }
    for fig in ["fig5.svg", "fig6-kcuc.svg", "fig7-kcuc.svg", "data.json"] {
        assert!(out.join(fig).is_file(), "{fig} missing");
    }
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("data.json")).unwrap()).unwrap();
    assert_eq!(data["emulated"], true);
    let fig5 = data["results"]["fig5"].as_array().unwrap();
    // kcuc and ktut at 1 and 4 connections, every answer verified.
    assert_eq!(fig5.len(), 4, "{stderr}");
    assert!(fig5
        .iter()
        .all(|p| p["load"]["counts"]["verified"].as_u64() > Some(0)));
    assert_eq!(data["results"]["fig6"].as_array().unwrap().len(), 2);
    assert_eq!(data["results"]["fig7"].as_array().unwrap().len(), 2);
    // The throughput experiment: kcuc and ktut back to back at 16 connections.
    let throughput = data["results"]["throughput"].as_array().unwrap();
    assert_eq!(throughput.len(), 2, "{stderr}");
    assert!(throughput
        .iter()
        .all(|p| p["load"]["interval_ms"].as_f64() == Some(0.0)
            && p["load"]["counts"]["verified"].as_u64() > Some(0)));
    // Six boots (fig5 × 2 models, fig6+7 × 2 hart counts, throughput × 2
    // models), each listened.
    let boots = data["boots"].as_array().unwrap();
    assert_eq!(boots.len(), 6);
    assert!(boots.iter().all(|b| b["error"].is_null()));
    let targets = String::from_utf8_lossy(&run.stdout);
    assert!(targets.contains("KCUC/KTUT at 64"), "{targets}");
    assert!(
        targets.contains("KCUC/KTUT at 64, back to back"),
        "{targets}"
    );
    assert!(targets.contains("memory"), "{targets}");
    none_left(&qemu);
}

#[test]
fn throughput_rounds_boot_every_model_per_round_in_alternating_order_and_keep_the_median() {
    let d = dir("rounds");
    let qemu = serving_fake(&d);
    let out = d.join("out");
    let run = qemu_bench(
        &qemu,
        &out,
        &["--experiments", "throughput", "--throughput-rounds", "3"],
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("data.json")).unwrap()).unwrap();
    // Rounds 1 and 3 boot kcuc then ktut, round 2 the other way round.
    let boots: Vec<&str> = data["boots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["model"].as_str().unwrap())
        .collect();
    assert_eq!(boots, ["kcuc", "ktut", "ktut", "kcuc", "kcuc", "ktut"]);
    // One point per model (16 connections with --quick), standing for three
    // rounds: the median's throughput is the middle of the three.
    let points = data["results"]["throughput"].as_array().unwrap();
    assert_eq!(points.len(), 2, "{stderr}");
    for p in points {
        let mut rounds: Vec<f64> = p["rounds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_f64().unwrap())
            .collect();
        assert_eq!(rounds.len(), 3);
        rounds.sort_by(f64::total_cmp);
        assert_eq!(p["load"]["throughput"].as_f64(), Some(rounds[1]));
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("3 time(s)"), "{md}");
    none_left(&qemu);
}

#[test]
fn a_guest_without_the_program_fails_the_run_in_its_own_words() {
    let d = dir("refuses");
    let qemu = fake(
        &d,
        r#"printf 'spawn %s: no program of that name is embedded in the kernel image\r\n$ ' "$model"
exec sleep 60"#,
    );
    let out = d.join("out");
    let run = qemu_bench(&qemu, &out, &["--experiments", "fig5"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the guest said: spawn kcuc: no program of that name"),
        "{stderr}"
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("**did not serve**: the guest said: spawn ktut"),
        "{md}"
    );
    none_left(&qemu);
}
