//! The `perfopt` command: a thin front end over the Rust API.
//!
//!   perfopt info [--device D] [--json]   what the optimizer detects and applies
//!   perfopt version                      versions of perfopt, libtorch and CUDA

use std::process::ExitCode;

use std::sync::Arc;

use perfopt::bench::{self, BenchOptions, InputSpec};
use perfopt::json::Json;
use perfopt::{CompileMode, Config, DeviceRequest, Optimizer};

const USAGE: &str = "\
usage: perfopt <command> [options]

commands:
  info [--device D] [--json] [--no-env] [--no-malloc-tuning]
        detect the device, apply the optimizer's settings, and print the report
        (D: auto, cpu, cuda, cuda:N, mps; --no-env ignores TRANSLATOR_* variables;
        --no-malloc-tuning, here and below, leaves glibc malloc's thresholds alone)
  bench MODEL.pt --input 4x80x100 [--input ...] [--device D] [--mode M] [--iterations N] [--json FILE]
        load the model once per compile mode (all four unless --mode is given, repeatable)
        and print cold start, compile time, p50/p99 latency, throughput, peak memory,
        relative error against fp32 eager and the speed-up over the model as loaded;
        an input is sizes joined by x, optionally :int64 (FILE - is standard output);
        --input-file X.npy uses saved inputs and --reference Y.npy (one per output)
        measures errors against saved outputs instead of the model as loaded
  batch MODEL.pt --input 1x80x100 [--input ...] [--device D] [--mode M] [--json]
        recommend a batch size from one sample: peak memory and throughput measured at
        several batch sizes (the service's fixed rule is shown beside it)
  version
        print the versions of perfopt, libtorch and CUDA
  help  print this text";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("info") => info(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("batch") => batch(&args[1..]),
        Some("version" | "--version" | "-V") => {
            println!("{}", perfopt::version::full_version().to_string_lossy());
            Ok(())
        }
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n\n{USAGE}")),
        None => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("perfopt: {message}");
            ExitCode::from(2)
        }
    }
}

fn info(args: &[String]) -> Result<(), String> {
    let mut config = Config::default();
    let mut json = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--no-env" => config.read_environment = false,
            "--no-malloc-tuning" => config.malloc_tuning = Some(false),
            "--device" => {
                let value = iter.next().ok_or("--device needs a value")?;
                config.device = Some(value.parse::<DeviceRequest>().map_err(|e| e.to_string())?);
            }
            other => return Err(format!("unknown option {other:?} for `info`\n\n{USAGE}")),
        }
    }
    let optimizer = Optimizer::new(&config).map_err(|e| e.to_string())?;
    let report = optimizer.report();
    if json {
        println!("{report}");
    } else {
        print_report(&report);
    }
    Ok(())
}

/// The options of the model commands (`bench`, `batch`), parsed in one place.
struct ModelArgs {
    config: Config,
    model_path: String,
    inputs: Vec<InputSpec>,
    input_files: Vec<String>,
    references: Vec<String>,
    modes: Vec<CompileMode>,
    iterations: usize,
    json: Option<String>,
}

fn parsed<T: std::str::FromStr<Err = perfopt::Error>>(text: String) -> Result<T, String> {
    text.parse::<T>().map_err(|e| e.to_string())
}

/// Parses `args` for `command`, accepting only the options in `allowed`.
/// `--json` takes a file for `bench` and is a plain switch for `batch`.
fn parse_model_args(command: &str, args: &[String], allowed: &[&str]) -> Result<ModelArgs, String> {
    let mut parsed_args = ModelArgs {
        config: Config::default(),
        model_path: String::new(),
        inputs: Vec::new(),
        input_files: Vec::new(),
        references: Vec::new(),
        modes: Vec::new(),
        iterations: 100,
        json: None,
    };
    let mut model_path = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg.starts_with("--") && !allowed.contains(&arg.as_str()) {
            return Err(format!("unknown option {arg:?} for `{command}`\n\n{USAGE}"));
        }
        let mut value = |name: &str| iter.next().cloned().ok_or(format!("{name} needs a value"));
        let a = &mut parsed_args;
        match arg.as_str() {
            "--input" => a.inputs.push(parsed(value("--input")?)?),
            "--input-file" => a.input_files.push(value("--input-file")?),
            "--reference" => a.references.push(value("--reference")?),
            "--mode" => a.modes.push(parsed(value("--mode")?)?),
            "--device" => a.config.device = Some(parsed::<DeviceRequest>(value("--device")?)?),
            "--no-env" => a.config.read_environment = false,
            "--no-malloc-tuning" => a.config.malloc_tuning = Some(false),
            "--iterations" => {
                a.iterations = value("--iterations")?
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or("--iterations needs a positive number")?
            }
            "--json" if command == "batch" => a.json = Some("-".to_string()),
            "--json" => a.json = Some(value("--json")?),
            path if model_path.is_none() => model_path = Some(path.to_string()),
            extra => return Err(format!("unexpected argument {extra:?}")),
        }
    }
    parsed_args.model_path =
        model_path.ok_or(format!("{command} needs a model file\n\n{USAGE}"))?;
    if parsed_args.inputs.is_empty() && parsed_args.input_files.is_empty() {
        return Err(format!(
            "{command} needs at least one --input, e.g. --input {}",
            if command == "batch" {
                "1x80x100"
            } else {
                "4x80x100"
            }
        ));
    }
    Ok(parsed_args)
}

fn bench(args: &[String]) -> Result<(), String> {
    let allowed = [
        "--input",
        "--input-file",
        "--reference",
        "--mode",
        "--device",
        "--no-env",
        "--no-malloc-tuning",
        "--iterations",
        "--json",
    ];
    let ModelArgs {
        config,
        model_path,
        inputs,
        input_files,
        references,
        mut modes,
        iterations,
        json: json_path,
    } = parse_model_args("bench", args, &allowed)?;
    if modes.is_empty() {
        modes = vec![
            CompileMode::None,
            CompileMode::Default,
            CompileMode::ReduceOverhead,
            CompileMode::MaxAutotune,
        ];
    }
    let optimizer = Arc::new(Optimizer::new(&config).map_err(|e| e.to_string())?);
    let options = BenchOptions {
        model_path,
        inputs,
        input_files,
        references,
        modes,
        iterations,
    };
    let device = optimizer.device().to_string();
    let rows = bench::run(optimizer, &options).map_err(|e| e.to_string())?;
    print!("{}", bench::table(&options, &device, &rows));
    if let Some(path) = json_path {
        let json = bench::to_json(&options, &device, &rows).to_string();
        if path == "-" {
            println!("{json}");
        } else {
            std::fs::write(&path, json + "\n").map_err(|e| format!("writing {path}: {e}"))?;
            println!("wrote {path}");
        }
    }
    Ok(())
}

fn batch(args: &[String]) -> Result<(), String> {
    let allowed = [
        "--input",
        "--mode",
        "--device",
        "--no-env",
        "--no-malloc-tuning",
        "--json",
    ];
    let ModelArgs {
        config,
        model_path,
        inputs,
        modes,
        json,
        ..
    } = parse_model_args("batch", args, &allowed)?;
    let mode = modes.last().copied().unwrap_or(CompileMode::Default);
    let json = json.is_some();
    let optimizer = Arc::new(Optimizer::new(&config).map_err(|e| e.to_string())?);
    let service_rule = optimizer.optimal_batch_size();
    let model = perfopt::Model::load(optimizer, &model_path, None).map_err(|e| e.to_string())?;
    model.compile(Some(mode), None).map_err(|e| e.to_string())?;
    tch::manual_seed(0);
    let sample = inputs.iter().map(InputSpec::make).collect();
    let rec = model.recommend_batch(sample).map_err(|e| e.to_string())?;
    if json {
        println!("{}", rec.to_json());
        return Ok(());
    }
    println!("perfopt batch {model_path} on {}", model.device());
    println!("  recommended batch      {} ({})", rec.batch, rec.reason);
    println!("  service rule           {service_rule}");
    let show = |v: Option<i64>| v.map_or("-".to_string(), |n| n.to_string());
    println!("  memory limit           {}", show(rec.memory_limit));
    println!("  throughput knee        {}", show(rec.throughput_knee));
    if let (Some(per), Some(fixed)) = (rec.per_sample_bytes, rec.fixed_bytes) {
        println!(
            "  memory fit             {:.2} MiB + {:.3} MiB per sample ({})",
            fixed / 1048576.0,
            per / 1048576.0,
            rec.memory_source
        );
    }
    println!(
        "\n  {:>6} {:>14} {:>16}",
        "batch", "peak memory", "samples/s"
    );
    let mut batches: Vec<i64> = rec
        .memory_points
        .iter()
        .map(|p| p.0)
        .chain(rec.throughput_points.iter().map(|p| p.0))
        .collect();
    batches.sort_unstable();
    batches.dedup();
    for b in batches {
        let memory = rec
            .memory_points
            .iter()
            .find(|p| p.0 == b)
            .map_or("-".to_string(), |p| {
                format!("{:.2} MiB", p.1 as f64 / 1048576.0)
            });
        let speed = rec
            .throughput_points
            .iter()
            .find(|p| p.0 == b)
            .map_or("-".to_string(), |p| format!("{:.1}", p.1));
        println!("  {b:>6} {memory:>14} {speed:>16}");
    }
    Ok(())
}

fn text(value: Option<&Json>) -> String {
    match value {
        None | Some(Json::Null) => "-".to_string(),
        Some(Json::Str(s)) => s.clone(),
        // {"mmap_threshold_bytes": 33554432, ...} as "mmap_threshold=32M ..."
        Some(Json::Object(fields)) => fields
            .iter()
            .map(|(key, value)| match (key.strip_suffix("_bytes"), value) {
                (Some(name), Json::Int(n)) => format!("{name}={}M", n >> 20),
                _ => format!("{key}={}", text(Some(value))),
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

fn bytes(value: Option<&Json>) -> String {
    match value {
        Some(Json::Int(n)) => format!("{:.1} GiB", *n as f64 / (1u64 << 30) as f64),
        _ => "-".to_string(),
    }
}

fn row(label: &str, value: impl AsRef<str>) {
    println!("  {label:<22} {}", value.as_ref());
}

fn print_report(report: &Json) {
    let device = report.get("device");
    let field = |name: &str| device.and_then(|d| d.get(name));
    println!("{}", perfopt::version::full_version().to_string_lossy());
    println!("\nDevice");
    row(
        "selected",
        format!(
            "{} (asked: {})",
            text(field("kind")),
            text(field("requested"))
        ),
    );
    row("name", text(field("name")));
    row(
        "memory",
        format!(
            "{} total, {} free",
            bytes(field("total_memory_bytes")),
            bytes(field("free_memory_bytes"))
        ),
    );
    row("compute capability", text(field("compute_capability")));
    row("CUDA devices", text(field("cuda_device_count")));
    row("MPS", text(field("mps_available")));
    row("cuDNN", text(report.get("cudnn_version")));

    let threads = report.get("threads");
    println!("\nThreads");
    for name in ["cores", "intra_op", "inter_op"] {
        row(name, text(threads.and_then(|t| t.get(name))));
    }

    println!("\nSettings (read back from libtorch)");
    println!(
        "  {:<22} {:<8} {:<10} {:<9} source",
        "setting", "value", "requested", "applied"
    );
    if let Some(Json::Object(settings)) = report.get("settings") {
        for (name, s) in settings {
            let source = match s.get("variable") {
                Some(Json::Str(var)) => format!("{} ({var})", text(s.get("source"))),
                _ => text(s.get("source")),
            };
            println!(
                "  {name:<22} {:<8} {:<10} {:<9} {source}",
                text(s.get("value")),
                text(s.get("requested")),
                text(s.get("applied"))
            );
        }
    }

    let compile = report.get("compile");
    println!("\nCompilation");
    row("enabled", text(compile.and_then(|c| c.get("enabled"))));
    row(
        "mode",
        format!(
            "{} ({})",
            text(compile.and_then(|c| c.get("mode"))),
            text(compile.and_then(|c| c.get("mode_source")))
        ),
    );
    row(
        "effective mode",
        text(compile.and_then(|c| c.get("effective_mode"))),
    );

    if let Some(Json::Array(vars)) = report.get("environment") {
        if !vars.is_empty() {
            println!("\nEnvironment");
            for var in vars {
                // Set after its reader loaded: say what that means for it.
                let late = match (var.get("in_time"), var.get("note")) {
                    (Some(Json::Bool(false)), Some(Json::Str(note))) => {
                        format!("\n{:<25}not in time: {note}", "")
                    }
                    (Some(Json::Bool(false)), _) => "  (not in time: set it before loading)".into(),
                    _ => String::new(),
                };
                row(
                    &text(var.get("name")),
                    format!(
                        "{} (set by {}){late}",
                        text(var.get("value")),
                        text(var.get("set_by"))
                    ),
                );
            }
        }
    }
    if let Some(Json::Array(skipped)) = report.get("skipped") {
        if !skipped.is_empty() {
            println!("\nSkipped");
            for s in skipped {
                row(&text(s.get("setting")), text(s.get("reason")));
            }
        }
    }
    println!(
        "\nBatch size (service rule): {}",
        text(report.get("batch_size").and_then(|b| b.get("service_rule")))
    );
}
