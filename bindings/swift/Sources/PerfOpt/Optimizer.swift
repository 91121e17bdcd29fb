import CPerfOpt
import Foundation

/// Detects the device and applies its settings (perfopt_optimizer_new).
/// Arguments left nil are decided by the TRANSLATOR_* variables, then the defaults.
public final class Optimizer {
    let handle: OpaquePointer

    public init(device: String? = nil,
                compileMode: String? = nil,
                cudnnBenchmark: Bool? = nil,
                tf32: Bool? = nil,
                cpuOptimization: Bool? = nil,
                intraOpThreads: Int32 = 0,
                mallocTuning: Bool? = nil,
                readEnvironment: Bool = true) throws {
        try checkABI()
        var config = perfopt_config()
        try check(perfopt_config_default(&config))
        func triState(_ value: Bool?) -> Int32 { value.map { $0 ? 1 : 0 } ?? -1 }
        config.cudnn_benchmark = triState(cudnnBenchmark)
        config.tf32 = triState(tf32)
        config.cpu_optimization = triState(cpuOptimization)
        config.intra_op_threads = intraOpThreads
        config.malloc_tuning = triState(mallocTuning)
        config.read_environment = readEnvironment ? 1 : 0
        var out: OpaquePointer?
        let status: perfopt_status = withOptionalCString(device) { devicePtr in
            withOptionalCString(compileMode) { modePtr in
                config.device = devicePtr
                config.compile_mode = modePtr
                return perfopt_optimizer_new(&config, &out)
            }
        }
        try check(status)
        guard let handle = out else {
            throw PerfOptError(code: Status.internal.rawValue, message: "perfopt_optimizer_new returned no handle")
        }
        self.handle = handle
    }

    deinit {
        perfopt_optimizer_free(handle)
    }

    public func report() throws -> OptimizerReport {
        try decode(OptimizerReport.self, from: reportJSON())
    }

    public func reportJSON() throws -> String {
        try readReport { perfopt_optimizer_report(handle, $0, $1, $2) }
    }

    /// The service's rule: CUDA > 16 GiB: 4, > 8 GiB: 2, else 1; MPS 2; CPU 1.
    public func optimalBatchSize() throws -> Int {
        var out: Int32 = 0
        try check(perfopt_optimal_batch_size(handle, &out))
        return Int(out)
    }

    /// Runs `body` in libtorch's inference mode on this thread; enter and exit
    /// cannot be split across threads.
    public func withInferenceScope<T>(_ body: () throws -> T) throws -> T {
        var scope: OpaquePointer?
        try check(perfopt_inference_enter(handle, &scope))
        defer { _ = perfopt_inference_exit(scope) }
        return try body()
    }

    public func load(path: String, name: String? = nil) throws -> Model {
        try Model(optimizer: self, path: path, name: name)
    }
}

func withOptionalCString<R>(_ string: String?, _ body: (UnsafePointer<CChar>?) throws -> R) rethrows -> R {
    guard let string = string else { return try body(nil) }
    return try string.withCString { try body($0) }
}
