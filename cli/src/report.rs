//! `perfopt info`'s report as text.

use perfopt::json::Json;

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

pub fn print_report(report: &Json) {
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
