//! The experiment driver end to end: `ssbench` starts real servers (the
//! `ceiling` model, the smallest), drives them, and writes the report, the JSON
//! of every point and the figures. Asserts completion and verified answers,
//! never timings.

use std::path::{Path, PathBuf};
use std::process::Command;

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ssbench-report-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn ssbench(args: &[&str], out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ssbench"))
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn json(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("data.json")).unwrap()).unwrap()
}

#[test]
fn quick_suite_writes_report_data_and_figures() {
    let out = out_dir("all");
    let run = ssbench(
        &[
            "all",
            "--quick",
            "--models",
            "ceiling",
            "--require",
            "ceiling",
        ],
        &out,
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.starts_with("# ssbench report"));
    assert!(md.contains("machine: "), "the machine line is missing");
    for section in [
        "## Targets",
        "## Figure 5",
        "## Throughput: back to back",
        "## Figure 6",
        "## Figure 7",
        "## Memory",
        "## Saturation",
    ] {
        assert!(md.contains(section), "{section} missing");
    }
    for fig in [
        "fig5.svg",
        "fig6-ceiling.svg",
        "fig7-ceiling.svg",
        "saturation.svg",
    ] {
        let svg = std::fs::read_to_string(out.join(fig)).unwrap();
        assert!(svg.starts_with("<svg"), "{fig}");
    }
    let v = json(&out);
    assert!(
        v["unavailable"].as_object().unwrap().is_empty(),
        "{}",
        v["unavailable"]
    );
    for exp in ["fig5", "throughput", "fig6", "fig7", "saturation"] {
        let pts = v[exp].as_array().unwrap();
        assert!(!pts.is_empty(), "{exp} has no points");
        for p in pts {
            assert!(p["failed"].is_null(), "{exp}: {}", p["failed"]);
            let c = &p["load"]["counts"];
            assert!(c["verified"].as_u64().unwrap() > 0, "{exp}: {c}");
            assert_eq!(c["wrong_answers"], 0);
        }
    }
    // fig6: 8 groups, one per granted priority.
    assert_eq!(v["fig6"][0]["load"]["groups"].as_array().unwrap().len(), 8);
    assert_eq!(v["fig7"][0]["load"]["groups"].as_array().unwrap().len(), 4);
    // fig5 sends no Hello, so each point began with a warm-up round, shown in
    // the report; fig6's HelloAcks made one needless.
    for p in v["fig5"].as_array().unwrap() {
        assert!(p["load"]["warmup_ms"].as_f64().unwrap() > 0.0, "{p}");
    }
    assert!(v["fig6"][0]["load"]["warmup_ms"].is_null());
    assert!(
        md.contains("Warm-up, ms"),
        "fig5's warm-up table is missing"
    );
    let mem = &v["memory"][0];
    assert!(mem["hold"]["held"].as_u64().unwrap() > 0, "{mem}");
    // Back to back: every connection's next request as soon as the answer is in.
    assert!(v["throughput"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["load"]["interval_ms"].as_f64() == Some(0.0)));
    assert_eq!(v["targets"].as_array().unwrap().len(), 7);
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_server_that_cannot_start_is_a_result_not_a_crash() {
    // 1 MiB is too little for any server to serve in: the memory experiment
    // records that it held nothing, with the server's reason, and writes the
    // report; the exit code is 1 (not 2, a crash of the driver) because no
    // answer at all was verified.
    let out = out_dir("cage");
    let run = ssbench(
        &[
            "memory",
            "--quick",
            "--models",
            "ceiling",
            "--memory-mib",
            "1",
        ],
        &out,
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no answer was verified"), "{stderr}");
    assert!(out.join("report.md").exists());
    let v = json(&out);
    let mem = &v["memory"][0];
    assert_eq!(mem["hold"]["held"], 0, "{mem}");
    // Whether the server dies before it listens or at its first connections
    // depends on what the machine had charged elsewhere (pages of the binary
    // already cached are not charged to the cage): either way nothing was
    // held, and the report says why the server ended.
    let reason = mem["hold"]["reason"].as_str().unwrap();
    let end = mem["server_end"].as_str().unwrap();
    assert!(
        reason.contains("did not start") || end.contains("out of memory"),
        "{mem}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn unknown_model_names_are_refused() {
    let out = out_dir("names");
    let run = ssbench(&["fig5", "--quick", "--models", "nosuchmodel"], &out);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("nosuchmodel"));
}
