//! The `perfopt` command as a user runs it: every command's --help, the
//! version, errors in the user's terms with status 2, and a model's
//! arguments kept in the order given across --input, --input-file and --arg.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn perfopt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_perfopt"))
        .args(args)
        .env_remove("PERFOPT_LOG")
        .output()
        .expect("run perfopt")
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// Two fixture models made by tests/fixtures/make_fixtures.py, once.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-fixtures");
        // The marker make_fixtures.py writes last (as tests/common's).
        if !dir.join(".version-6").exists() {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("the workspace");
            let python = std::env::var("PERFOPT_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|_| root.join(".venv/bin/python"));
            let status = Command::new(&python)
                .arg(root.join("tests/fixtures/make_fixtures.py"))
                .arg(&dir)
                .args(["--only", "vocoder,two_inputs"])
                .status()
                .expect("run make_fixtures.py (set PERFOPT_PYTHON, or run `make setup`)");
            assert!(status.success(), "make_fixtures.py failed");
        }
        dir
    })
}

fn fixture(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

/// Options for a bench or batch run that is only checked, not read.
const QUICK: [&str; 8] = [
    "--mode",
    "none",
    "--iterations",
    "2",
    "--seconds",
    "1",
    "--device",
    "cpu",
];

#[test]
fn every_command_has_help() {
    for (args, says) in [
        (vec!["--help"], "Usage: perfopt [COMMAND]"),
        (vec!["help"], "Commands:"),
        (vec!["info", "--help"], "--no-malloc-tuning"),
        (vec!["bench", "--help"], "--tuning-budget <MS>"),
        (vec!["bench", "--help"], "interleaved rounds"),
        (vec!["batch", "--help"], "--input-file <X.npy>"),
        (vec!["version", "--help"], "Print the versions"),
        (vec!["help", "bench"], "--reference <Y.npy>"),
    ] {
        let output = perfopt(&args);
        assert!(
            output.status.success(),
            "perfopt {args:?}: {}",
            text(&output)
        );
        assert!(
            text(&output).contains(says),
            "perfopt {args:?} lacks {says:?}:\n{}",
            text(&output)
        );
    }
}

#[test]
fn the_version_names_libtorch() {
    for args in [["version"], ["--version"], ["-V"]] {
        let output = perfopt(&args);
        assert!(output.status.success());
        assert!(
            text(&output).starts_with("perfopt 0.1.0 (libtorch 2.11.0"),
            "{}",
            text(&output)
        );
    }
}

#[test]
fn mistakes_are_status_2_in_the_users_terms() {
    for (args, says) in [
        (vec![], "Usage: perfopt"),
        (vec!["infos"], "unrecognized subcommand 'infos'"),
        (vec!["info", "--bogus"], "unexpected argument '--bogus'"),
        (vec!["info", "--device", "tpu"], "--device"),
        (
            vec!["bench", "m.pt", "--input", "2x4", "--mode", "fast"],
            "unknown compile mode",
        ),
        (
            vec!["bench", "m.pt", "--input", "2xfour"],
            "expected sizes like 4x80x100",
        ),
        (vec!["bench", "m.pt", "--arg", "sr=16000"], "sr=16000"),
        (
            vec!["bench", "m.pt", "--input", "2x4", "--iterations", "0"],
            "--iterations",
        ),
        (vec!["bench", "--input", "2x4"], "<MODEL>"),
        (
            vec!["bench", "m.pt"],
            "bench needs the model's arguments, e.g. --input 4x80x100",
        ),
        (
            vec!["batch", "m.pt"],
            "batch needs the model's arguments, e.g. --input 1x80x100",
        ),
        (
            vec!["batch", "a.pt", "b.pt", "--input", "1x2"],
            "unexpected argument 'b.pt'",
        ),
    ] {
        let output = perfopt(&args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "perfopt {args:?}: {}",
            text(&output)
        );
        assert!(
            text(&output).contains(says),
            "perfopt {args:?} lacks {says:?}:\n{}",
            text(&output)
        );
    }
}

#[test]
fn info_prints_the_report_as_json() {
    let output = perfopt(&["info", "--device", "cpu", "--no-env", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.trim_start().starts_with('{') && report.contains("\"device\""),
        "{report}"
    );
}

#[test]
fn arguments_keep_their_order_across_options() {
    // two_inputs takes x [2, 16] then y [2, 4].
    let x = fixture("two_inputs.input0.npy");
    let model = fixture("two_inputs.pt");
    let right = perfopt(
        &[
            &[
                "bench",
                model.as_str(),
                "--input-file",
                &x,
                "--input",
                "2x4",
            ],
            &QUICK[..],
        ]
        .concat(),
    );
    assert!(right.status.success(), "{}", text(&right));
    assert!(text(&right).contains("two_inputs.pt"), "{}", text(&right));
    let swapped = perfopt(
        &[
            &[
                "bench",
                model.as_str(),
                "--input",
                "2x4",
                "--input-file",
                &x,
            ],
            &QUICK[..],
        ]
        .concat(),
    );
    assert_eq!(swapped.status.code(), Some(2), "{}", text(&swapped));
    // y first: x's layer gets the [2, 4] tensor.
    assert!(
        text(&swapped).contains("(2x4 and 16x8)"),
        "{}",
        text(&swapped)
    );
}

#[test]
fn batch_recommends_from_one_sample() {
    let vocoder = fixture("vocoder.pt");
    let output = perfopt(&[
        "batch", &vocoder, "--input", "1x80x32", "--device", "cpu", "--no-env", "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("\"batch\""),
        "{}",
        text(&output)
    );
}

#[test]
fn without_arguments_the_recorded_inputs_are_used() {
    // make_fixtures.py writes vocoder.inputs.json ([-1, 80, 32]) beside it.
    let vocoder = fixture("vocoder.pt");
    let output = perfopt(&[&["bench", vocoder.as_str(), "--batch", "3"], &QUICK[..]].concat());
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("as recorded in") && text(&output).contains("vocoder.inputs.json"),
        "{}",
        text(&output)
    );
    assert!(
        text(&output).contains("inputs [3x80x32:float]"),
        "{}",
        text(&output)
    );
    // Throughput says its unit: samples where the batch is known, else calls.
    assert!(text(&output).contains(" samples/s"), "{}", text(&output));
    let x = fixture("two_inputs.input0.npy");
    let y = fixture("two_inputs.input1.npy");
    let files = perfopt(
        &[
            &[
                "bench",
                &fixture("two_inputs.pt"),
                "--input-file",
                &x,
                "--input-file",
                &y,
            ],
            &QUICK[..],
        ]
        .concat(),
    );
    assert!(files.status.success(), "{}", text(&files));
    assert!(text(&files).contains(" calls/s"), "{}", text(&files));
}

#[test]
fn a_missing_argument_is_named_with_the_option_that_gives_it() {
    let model = fixture("two_inputs.pt");
    let output = perfopt(&[
        "bench", &model, "--input", "2x16", "--mode", "none", "--device", "cpu",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains(
            "forward() also needs `y` (Tensor): add --input SHAPE[:DTYPE] or --input-file y.npy"
        ),
        "{}",
        text(&output)
    );
}
