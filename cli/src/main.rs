//! The `perfopt` command: a thin front end over the Rust API, its options
//! declared once with clap (usage, help and the allowed values come from
//! the declarations below).
//!
//!   perfopt info     what the optimizer detects and applies
//!   perfopt bench    every compile mode (and model format) measured side by side
//!   perfopt batch    a batch size from measured memory and throughput
//!   perfopt version  versions of perfopt, libtorch and CUDA

mod bench;
mod bench_output;
mod inputs;
mod report;

use std::process::ExitCode;
use std::sync::Arc;

use bench::BenchOptions;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use inputs::{ArgSpec, Fill};
use perfopt::{CompileMode, Config, DeviceRequest, Optimizer};

#[derive(Parser)]
#[command(
    name = "perfopt",
    about = "Fast start-up and fast inference for PyTorch models: what the optimizer detects, \
             every compile mode and format measured side by side, batch sizes.",
    disable_version_flag = true,
    args_override_self = true,
    subcommand_required = false,
    arg_required_else_help = true
)]
struct Cli {
    /// Print the versions of perfopt, libtorch and CUDA
    #[arg(short = 'V', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Detect the device, apply the optimizer's settings, print the report
    Info(InfoArgs),
    /// Measure a model in every compile mode, side by side
    ///
    /// Loads each model (TorchScript .pt, AOTInductor .pt2, ONNX .onnx, ExecuTorch .pte
    /// or a bundle .perfopt) once per compile mode and prints cold start, compile time,
    /// p50 with its noise, p99, throughput, relative error against the first model in
    /// fp32, and how each row
    /// compares with the first; rows are timed in interleaved rounds. Two files of one
    /// model compare the formats.
    #[command(after_help = RECORDED)]
    Bench(BenchArgs),
    /// Recommend a batch size from measured memory and throughput
    ///
    /// From one sample (size 1 along the batch dimension): peak memory and throughput
    /// measured at several batch sizes, the service's fixed rule shown beside it.
    #[command(after_help = RECORDED)]
    Batch(BatchArgs),
    /// Print the versions of perfopt, libtorch and CUDA
    Version,
}

/// How the optimizer starts (info, bench and batch).
#[derive(Args)]
struct OptimizerArgs {
    /// The device: auto (default), cpu, cuda, cuda:N or mps
    #[arg(long, value_name = "D", value_parser = parse_device)]
    device: Option<DeviceRequest>,
    /// Ignore the TRANSLATOR_* variables
    #[arg(long)]
    no_env: bool,
    /// Leave glibc malloc's thresholds alone
    #[arg(long)]
    no_malloc_tuning: bool,
}

impl OptimizerArgs {
    fn config(&self) -> Config {
        let mut config = Config {
            device: self.device.clone(),
            ..Config::default()
        };
        if self.no_env {
            config.read_environment = false;
        }
        if self.no_malloc_tuning {
            config.malloc_tuning = Some(false);
        }
        config
    }
}

#[derive(Args)]
struct InfoArgs {
    #[command(flatten)]
    optimizer: OptimizerArgs,
    /// The report as JSON (perfopt_optimizer_report)
    #[arg(long)]
    json: bool,
}

/// The model's arguments, in the order of its forward(): the three options
/// may be mixed, and their order on the command line is kept.
#[derive(Args)]
struct ModelArguments {
    /// A tensor of this shape (e.g. 4x80x100 or 4x12:int64), filled by its name in the
    /// model's schema (masks of ones, bounded token ids, quiet audio, log-mel-like
    /// spectrograms; else unit normal)
    #[arg(long, value_name = "SHAPE[:DTYPE]", value_parser = parse_shape)]
    input: Vec<ArgSpec>,
    /// A saved tensor (.npy)
    #[arg(long, value_name = "X.npy", value_parser = parse_file)]
    input_file: Vec<ArgSpec>,
    /// A scalar argument: KIND is int, float, bool or str (e.g. sr=16000:int)
    #[arg(long = "arg", value_name = "NAME=VALUE:KIND", value_parser = parse_scalar)]
    scalar: Vec<ArgSpec>,
    /// Integer inputs are drawn from [0, K)
    #[arg(long, value_name = "K", default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..))]
    int_max: i64,
}

/// Where no argument is given, the inputs come from NAME.inputs.json beside
/// the (first) model, as perfopt.export writes it.
const RECORDED: &str =
    "Without --input, --input-file or --arg, the inputs are those perfopt.export \
                        recorded beside the model (NAME.inputs.json).";

impl ModelArguments {
    /// The three kinds of argument in the order they were given, else the
    /// inputs recorded beside `model` (NAME.inputs.json) with `batch` for
    /// their dynamic sizes; `example` shows the user an --input.
    fn in_order(
        &self,
        matches: &ArgMatches,
        command: &str,
        model: &str,
        batch: i64,
        example: &str,
    ) -> Result<Vec<ArgSpec>, String> {
        let mut ordered: Vec<(usize, ArgSpec)> = Vec::new();
        for (id, values) in [
            ("input", &self.input),
            ("input_file", &self.input_file),
            ("scalar", &self.scalar),
        ] {
            let indices = matches.indices_of(id).into_iter().flatten();
            ordered.extend(indices.zip(values.iter().cloned()));
        }
        ordered.sort_by_key(|(index, _)| *index);
        if ordered.is_empty() {
            return match inputs::recorded(model, batch) {
                Some((path, Ok(specs))) => {
                    let labels: Vec<String> = specs.iter().map(inputs::label).collect();
                    eprintln!(
                        "perfopt: inputs [{}] as recorded in {path}",
                        labels.join(", ")
                    );
                    Ok(specs)
                }
                Some((_, Err(err))) => Err(err.to_string()),
                None => Err(format!(
                    "{command} needs the model's arguments, e.g. --input {example}, or a \
                     NAME.inputs.json beside the model (perfopt {command} --help says how)"
                )),
            };
        }
        Ok(ordered.into_iter().map(|(_, spec)| spec).collect())
    }
}

#[derive(Args)]
struct BenchArgs {
    /// Model files; the first in fp32 is the reference for the errors
    #[arg(required = true, value_name = "MODEL")]
    models: Vec<String>,
    #[command(flatten)]
    arguments: ModelArguments,
    /// The size of each dynamic dimension of recorded inputs (NAME.inputs.json)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..))]
    batch: i64,
    /// A compile mode: none, default, reduce-overhead or max-autotune (repeatable;
    /// default: all four)
    #[arg(long, value_name = "M", value_parser = parse_mode)]
    mode: Vec<CompileMode>,
    /// Timed rounds at most
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// Stop timing after S seconds, past 5 rounds
    #[arg(long, value_name = "S", default_value_t = 20.0)]
    seconds: f64,
    /// Measure errors against saved outputs (one file per output)
    #[arg(long = "reference", value_name = "Y.npy")]
    references: Vec<String>,
    /// Remember max-autotune's choice in DIR (a second run measures nothing)
    #[arg(long, value_name = "DIR")]
    tuning_cache: Option<String>,
    /// max-autotune's budget in milliseconds (default: 2000 on the CPU, 1000 on CUDA)
    #[arg(long, value_name = "MS")]
    tuning_budget: Option<u32>,
    /// fp32, or allow-reduced: max-autotune also measures a bundle's
    /// reduced-precision forms (bf16, fp16, int8)
    #[arg(long, value_name = "P", default_value = "fp32", value_parser = ["fp32", "allow-reduced"])]
    precision: String,
    /// The relative error a reduced-precision form may have against fp32
    #[arg(long, value_name = "E", default_value_t = perfopt::model::DEFAULT_REDUCED_TOLERANCE)]
    reduced_tolerance: f64,
    /// Judge reduced-precision forms by cosine similarity, at least C (embeddings)
    #[arg(long, value_name = "C", default_value_t = 0.0)]
    min_cosine: f64,
    #[command(flatten)]
    optimizer: OptimizerArgs,
    /// Also write the results as JSON (- for standard output)
    #[arg(long, value_name = "FILE")]
    json: Option<String>,
}

#[derive(Args)]
struct BatchArgs {
    /// The model file
    #[arg(value_name = "MODEL")]
    model: String,
    #[command(flatten)]
    arguments: ModelArguments,
    /// The compile mode to measure in: none, default, reduce-overhead or max-autotune
    #[arg(long, value_name = "M", value_parser = parse_mode, default_value = "default")]
    mode: CompileMode,
    #[command(flatten)]
    optimizer: OptimizerArgs,
    /// The recommendation as JSON
    #[arg(long)]
    json: bool,
}

fn parse_device(text: &str) -> Result<DeviceRequest, String> {
    text.parse().map_err(|e: perfopt::Error| e.to_string())
}

fn parse_mode(text: &str) -> Result<CompileMode, String> {
    text.parse().map_err(|e: perfopt::Error| e.to_string())
}

fn parse_shape(text: &str) -> Result<ArgSpec, String> {
    inputs::parse_shape(text).map_err(|e| e.to_string())
}

fn parse_file(text: &str) -> Result<ArgSpec, String> {
    Ok(ArgSpec::File(text.to_string()))
}

fn parse_scalar(text: &str) -> Result<ArgSpec, String> {
    inputs::parse_scalar(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let sub = |name: &str| matches.subcommand_matches(name).expect("clap matched it");
    let result = match cli.command {
        _ if cli.version => version(),
        Some(Command::Version) => version(),
        Some(Command::Info(args)) => info(&args),
        Some(Command::Bench(args)) => bench(&args, sub("bench")),
        Some(Command::Batch(args)) => batch(&args, sub("batch")),
        None => {
            let _ = Cli::command().print_help();
            Err("a command is needed".to_string())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("perfopt: {message}");
            ExitCode::from(2)
        }
    }
}

fn version() -> Result<(), String> {
    println!("{}", perfopt::version::full_version().to_string_lossy());
    Ok(())
}

fn info(args: &InfoArgs) -> Result<(), String> {
    let optimizer = Optimizer::new(&args.optimizer.config()).map_err(|e| e.to_string())?;
    let report = optimizer.report();
    if args.json {
        println!("{report}");
    } else {
        report::print_report(&report);
    }
    Ok(())
}

fn bench(args: &BenchArgs, matches: &ArgMatches) -> Result<(), String> {
    let modes = if args.mode.is_empty() {
        vec![
            CompileMode::None,
            CompileMode::Default,
            CompileMode::ReduceOverhead,
            CompileMode::MaxAutotune,
        ]
    } else {
        args.mode.clone()
    };
    let arguments =
        args.arguments
            .in_order(matches, "bench", &args.models[0], args.batch, "4x80x100")?;
    let optimizer = Arc::new(Optimizer::new(&args.optimizer.config()).map_err(|e| e.to_string())?);
    let options = BenchOptions {
        models: args.models.clone(),
        args: arguments,
        references: args.references.clone(),
        modes,
        iterations: args.iterations as usize,
        seconds: args.seconds,
        fill: Fill {
            int_max: args.arguments.int_max,
        },
        tuning_cache: args.tuning_cache.clone(),
        tuning_budget_ms: args.tuning_budget.unwrap_or(0),
        precision: match args.precision.as_str() {
            "allow-reduced" => perfopt::Precision::AllowReduced,
            _ => perfopt::Precision::Fp32,
        },
        reduced_tolerance: perfopt::ReducedTolerance {
            relative: args.reduced_tolerance,
            min_cosine: args.min_cosine,
        },
    };
    let device = optimizer.device().to_string();
    let rows = bench::run(optimizer, &options).map_err(|e| e.to_string())?;
    print!("{}", bench_output::table(&options, &device, &rows));
    if let Some(path) = &args.json {
        let json = bench_output::to_json(&options, &device, &rows).to_string();
        if path == "-" {
            println!("{json}");
        } else {
            std::fs::write(path, json + "\n").map_err(|e| format!("writing {path}: {e}"))?;
            println!("wrote {path}");
        }
    }
    if rows.iter().all(|r| r.failed.is_some()) {
        return Err("every row failed".to_string());
    }
    Ok(())
}

fn batch(args: &BatchArgs, matches: &ArgMatches) -> Result<(), String> {
    let arguments = args
        .arguments
        .in_order(matches, "batch", &args.model, 1, "1x80x100")?;
    let optimizer = Arc::new(Optimizer::new(&args.optimizer.config()).map_err(|e| e.to_string())?);
    let service_rule = optimizer.optimal_batch_size();
    let model_path = args.model.clone();
    let model = perfopt::Model::load(optimizer, &model_path, None).map_err(|e| e.to_string())?;
    model
        .compile(Some(args.mode), None)
        .map_err(|e| e.to_string())?;
    tch::manual_seed(0);
    let forward = model.methods().into_iter().find(|m| m.name == "forward");
    let fill = Fill {
        int_max: args.arguments.int_max,
    };
    let sample = inputs::values(&arguments, forward.as_ref(), fill).map_err(|e| e.to_string())?;
    let rec = model.recommend_batch(sample).map_err(|e| e.to_string())?;
    if args.json {
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
