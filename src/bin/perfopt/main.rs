//! The `perfopt` command: a thin front end over the Rust API.
//!
//!   perfopt info     what the optimizer detects and applies
//!   perfopt bench    every compile mode (and model format) measured side by side
//!   perfopt batch    a batch size from measured memory and throughput
//!   perfopt version  versions of perfopt, libtorch and CUDA

mod bench;
mod inputs;
mod report;

use std::process::ExitCode;
use std::sync::Arc;

use bench::BenchOptions;
use inputs::{ArgSpec, Fill};
use perfopt::{CompileMode, Config, DeviceRequest, Optimizer};

const USAGE: &str = "\
usage: perfopt <command> [options]      (perfopt <command> --help for one command)

commands:
  info      detect the device, apply the optimizer's settings, print the report
  bench     measure a model in every compile mode, side by side
  batch     recommend a batch size from measured memory and throughput
  version   print the versions of perfopt, libtorch and CUDA
  help      print this text";

const INFO_USAGE: &str = "\
usage: perfopt info [--device D] [--json] [--no-env] [--no-malloc-tuning]
  detect the device, apply the optimizer's settings, and print the report.
  --device D          auto (default), cpu, cuda, cuda:N or mps
  --json              the report as JSON (perfopt_optimizer_report)
  --no-env            ignore the TRANSLATOR_* variables
  --no-malloc-tuning  leave glibc malloc's thresholds alone";

const BENCH_USAGE: &str = "\
usage: perfopt bench MODEL [MODEL...] ARGUMENTS [options]
  load each model (TorchScript .pt or AOTInductor .pt2) once per compile mode and
  print cold start, compile time, p50 with its noise, p99, throughput, relative error
  against the first model in fp32, and how each row compares with the first; rows
  are timed in interleaved rounds. Two files of one model compare the formats.
arguments, in the order of the model's forward():
  --input 4x80x100[:dtype]  a tensor of this shape, filled by its name in the model's
                            schema (masks of ones, bounded token ids, quiet audio,
                            log-mel-like spectrograms; else unit normal)
  --input-file X.npy        a saved tensor
  --arg NAME=VALUE:KIND     a scalar: KIND int, float, bool or str (e.g. sr=16000:int)
options:
  --mode M            none, default, reduce-overhead, max-autotune (repeatable; default all)
  --iterations N      timed rounds at most (default 100)
  --seconds S         stop timing after S seconds, past 5 rounds (default 20)
  --int-max K         integer inputs are drawn from [0, K) (default 100)
  --reference Y.npy   measure errors against saved outputs (one per output)
  --tuning-cache DIR  remember max-autotune's choice in DIR (a second run measures nothing)
  --tuning-budget MS  max-autotune's budget (default: 2000 on the CPU, 1000 on CUDA)
  --device D, --no-env, --no-malloc-tuning   as for info
  --json FILE         also write the results as JSON (- for standard output)";

const BATCH_USAGE: &str = "\
usage: perfopt batch MODEL ARGUMENTS [--mode M] [--device D] [--json] [--no-env] [--no-malloc-tuning]
  recommend a batch size from one sample (size 1 along the batch dimension): peak
  memory and throughput measured at several batch sizes, the service's fixed rule
  shown beside it. ARGUMENTS as for bench (--input 1x80x100, --input-file, --arg).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let help = |usage: &str| {
        println!("{usage}");
        Ok(())
    };
    let wants_help = args.iter().skip(1).any(|a| a == "--help" || a == "-h");
    let result = match args.first().map(String::as_str) {
        Some("info") if wants_help => help(INFO_USAGE),
        Some("bench") if wants_help => help(BENCH_USAGE),
        Some("batch") if wants_help => help(BATCH_USAGE),
        Some("info") => info(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("batch") => batch(&args[1..]),
        Some("version" | "--version" | "-V") => {
            println!("{}", perfopt::version::full_version().to_string_lossy());
            Ok(())
        }
        Some("help" | "--help" | "-h") => help(USAGE),
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
            other => {
                return Err(format!(
                    "unknown option {other:?} for `info`\n\n{INFO_USAGE}"
                ))
            }
        }
    }
    let optimizer = Optimizer::new(&config).map_err(|e| e.to_string())?;
    let report = optimizer.report();
    if json {
        println!("{report}");
    } else {
        report::print_report(&report);
    }
    Ok(())
}

/// The options of the model commands (`bench`, `batch`), parsed in one place.
struct ModelArgs {
    config: Config,
    models: Vec<String>,
    args: Vec<ArgSpec>,
    references: Vec<String>,
    modes: Vec<CompileMode>,
    iterations: usize,
    seconds: f64,
    int_max: i64,
    tuning_cache: Option<String>,
    tuning_budget_ms: u32,
    json: Option<String>,
}

fn parsed<T: std::str::FromStr<Err = perfopt::Error>>(text: String) -> Result<T, String> {
    text.parse::<T>().map_err(|e| e.to_string())
}

fn number<T: std::str::FromStr>(text: String, what: &str) -> Result<T, String> {
    text.parse::<T>()
        .map_err(|_| format!("{what} needs a number, got {text:?}"))
}

/// Parses `args` for `command`, accepting only the options in `allowed`.
/// `--json` takes a file for `bench` and is a plain switch for `batch`.
fn parse_model_args(
    command: &str,
    usage: &str,
    args: &[String],
    allowed: &[&str],
) -> Result<ModelArgs, String> {
    let mut a = ModelArgs {
        config: Config::default(),
        models: Vec::new(),
        args: Vec::new(),
        references: Vec::new(),
        modes: Vec::new(),
        iterations: 100,
        seconds: 20.0,
        int_max: 100,
        tuning_cache: None,
        tuning_budget_ms: 0,
        json: None,
    };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg.starts_with("--") && !allowed.contains(&arg.as_str()) {
            return Err(format!("unknown option {arg:?} for `{command}`\n\n{usage}"));
        }
        let mut value = |name: &str| iter.next().cloned().ok_or(format!("{name} needs a value"));
        let spec = |r: perfopt::Result<ArgSpec>| r.map_err(|e| e.to_string());
        match arg.as_str() {
            "--input" => a.args.push(spec(inputs::parse_shape(&value("--input")?))?),
            "--input-file" => a.args.push(ArgSpec::File(value("--input-file")?)),
            "--arg" => a.args.push(spec(inputs::parse_scalar(&value("--arg")?))?),
            "--reference" => a.references.push(value("--reference")?),
            "--mode" => a.modes.push(parsed(value("--mode")?)?),
            "--device" => a.config.device = Some(parsed::<DeviceRequest>(value("--device")?)?),
            "--no-env" => a.config.read_environment = false,
            "--no-malloc-tuning" => a.config.malloc_tuning = Some(false),
            "--iterations" => {
                a.iterations = number::<usize>(value("--iterations")?, "--iterations")?.max(1)
            }
            "--seconds" => a.seconds = number(value("--seconds")?, "--seconds")?,
            "--int-max" => a.int_max = number::<i64>(value("--int-max")?, "--int-max")?.max(1),
            "--tuning-cache" => a.tuning_cache = Some(value("--tuning-cache")?),
            "--tuning-budget" => {
                a.tuning_budget_ms = number(value("--tuning-budget")?, "--tuning-budget")?
            }
            "--json" if command == "batch" => a.json = Some("-".to_string()),
            "--json" => a.json = Some(value("--json")?),
            path if command == "bench" || a.models.is_empty() => a.models.push(path.to_string()),
            extra => return Err(format!("unexpected argument {extra:?}\n\n{usage}")),
        }
    }
    if a.models.is_empty() {
        return Err(format!("{command} needs a model file\n\n{usage}"));
    }
    if a.args.is_empty() {
        return Err(format!(
            "{command} needs the model's arguments, e.g. --input {}\n\n{usage}",
            if command == "batch" {
                "1x80x100"
            } else {
                "4x80x100"
            }
        ));
    }
    Ok(a)
}

fn bench(args: &[String]) -> Result<(), String> {
    let allowed = [
        "--input",
        "--input-file",
        "--arg",
        "--reference",
        "--mode",
        "--device",
        "--no-env",
        "--no-malloc-tuning",
        "--iterations",
        "--seconds",
        "--int-max",
        "--tuning-cache",
        "--tuning-budget",
        "--json",
    ];
    let a = parse_model_args("bench", BENCH_USAGE, args, &allowed)?;
    let modes = if a.modes.is_empty() {
        vec![
            CompileMode::None,
            CompileMode::Default,
            CompileMode::ReduceOverhead,
            CompileMode::MaxAutotune,
        ]
    } else {
        a.modes
    };
    let optimizer = Arc::new(Optimizer::new(&a.config).map_err(|e| e.to_string())?);
    let options = BenchOptions {
        models: a.models,
        args: a.args,
        references: a.references,
        modes,
        iterations: a.iterations,
        seconds: a.seconds,
        fill: Fill { int_max: a.int_max },
        tuning_cache: a.tuning_cache,
        tuning_budget_ms: a.tuning_budget_ms,
    };
    let device = optimizer.device().to_string();
    let rows = bench::run(optimizer, &options).map_err(|e| e.to_string())?;
    print!("{}", bench::table(&options, &device, &rows));
    if let Some(path) = a.json {
        let json = bench::to_json(&options, &device, &rows).to_string();
        if path == "-" {
            println!("{json}");
        } else {
            std::fs::write(&path, json + "\n").map_err(|e| format!("writing {path}: {e}"))?;
            println!("wrote {path}");
        }
    }
    if rows.iter().all(|r| r.failed.is_some()) {
        return Err("every row failed".to_string());
    }
    Ok(())
}

fn batch(args: &[String]) -> Result<(), String> {
    let allowed = [
        "--input",
        "--input-file",
        "--arg",
        "--mode",
        "--device",
        "--no-env",
        "--no-malloc-tuning",
        "--int-max",
        "--json",
    ];
    let a = parse_model_args("batch", BATCH_USAGE, args, &allowed)?;
    let mode = a.modes.last().copied().unwrap_or(CompileMode::Default);
    let optimizer = Arc::new(Optimizer::new(&a.config).map_err(|e| e.to_string())?);
    let service_rule = optimizer.optimal_batch_size();
    let model_path = a.models[0].clone();
    let model = perfopt::Model::load(optimizer, &model_path, None).map_err(|e| e.to_string())?;
    model.compile(Some(mode), None).map_err(|e| e.to_string())?;
    tch::manual_seed(0);
    let forward = model.methods().into_iter().find(|m| m.name == "forward");
    let sample = inputs::values(&a.args, forward.as_ref(), Fill { int_max: a.int_max })
        .map_err(|e| e.to_string())?;
    let rec = model.recommend_batch(sample).map_err(|e| e.to_string())?;
    if a.json.is_some() {
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
