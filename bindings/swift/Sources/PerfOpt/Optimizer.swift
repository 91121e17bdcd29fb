import CPerfOpt
import Foundation

/// Detects the device and applies its settings (perfopt_optimizer_new).
/// Arguments left nil are decided by the TRANSLATOR_* variables, then the defaults.
///
/// `Sendable`: its calls may come from any thread (reports and loading take
/// perfopt's `const` handle; inference scopes are bound to the thread that
/// enters them, which `withInferenceScope` keeps by construction).
public final class Optimizer: @unchecked Sendable {
    let handle: OpaquePointer

    public init(device: String? = nil,
                compileMode: String? = nil,
                cudnnBenchmark: Bool? = nil,
                tf32: Bool? = nil,
                cpuOptimization: Bool? = nil,
                torchCompile: Bool? = nil,
                intraOpThreads: Int32 = 0,
                interOpThreads: Int32 = 0,
                mallocTuning: Bool? = nil,
                onnxruntimeLibrary: String? = nil,
                tuningCacheDir: String? = nil,
                readEnvironment: Bool = true) throws(PerfOptError) {
        try checkABI()
        var config = perfopt_config()
        try check(perfopt_config_init(&config, cSize(of: perfopt_config.self)))
        func triState(_ value: Bool?) -> Int32 { value.map { $0 ? 1 : 0 } ?? PERFOPT_AUTO }
        config.cudnn_benchmark = triState(cudnnBenchmark)
        config.tf32 = triState(tf32)
        config.cpu_optimization = triState(cpuOptimization)
        config.torch_compile = triState(torchCompile)
        config.intra_op_threads = intraOpThreads
        config.inter_op_threads = interOpThreads
        config.malloc_tuning = triState(mallocTuning)
        config.read_environment = readEnvironment ? 1 : 0
        var out: OpaquePointer?
        let status: StatusCode = withOptionalCString(device) { devicePtr in
            withOptionalCString(compileMode) { modePtr in
                withOptionalCString(onnxruntimeLibrary) { libraryPtr in
                    withOptionalCString(tuningCacheDir) { cachePtr in
                        config.device = devicePtr
                        config.compile_mode = modePtr
                        config.onnxruntime_library = libraryPtr
                        config.tuning_cache_dir = cachePtr
                        return perfopt_optimizer_new(&config, &out)
                    }
                }
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

    public func report() throws(PerfOptError) -> OptimizerReport {
        try decode(OptimizerReport.self, from: reportJSON())
    }

    public func reportJSON() throws(PerfOptError) -> String {
        try readReport { perfopt_optimizer_report(handle, $0, $1, $2) }
    }

    /// The service's rule: CUDA > 16 GiB: 4, > 8 GiB: 2, else 1; MPS 2; CPU 1.
    public func optimalBatchSize() throws(PerfOptError) -> Int {
        var out: Int32 = 0
        try check(perfopt_optimal_batch_size(handle, &out))
        return Int(out)
    }

    /// Runs `body` in libtorch's inference mode on this thread
    /// (perfopt_inference_enter, then perfopt_inference_exit however `body`
    /// ends), so enter and exit cannot be split across threads. Scopes nest.
    ///
    /// Throws a `PerfOptError` when the scope cannot be entered, else what
    /// `body` throws. (Untyped: Swift 6.3 infers `any Error` for a closure's
    /// thrown type, so a `throws(PerfOptError)` body would need its type
    /// spelled out at every call.)
    public func withInferenceScope<T>(_ body: () throws -> T) throws -> T {
        var scope: OpaquePointer?
        try check(perfopt_inference_enter(handle, &scope))
        defer { _ = perfopt_inference_exit(scope) }
        return try body()
    }

    /// Enters inference mode on this thread until the scope exits (see
    /// `InferenceScope`), for a scope that cannot be one closure.
    public func enterInferenceScope() throws(PerfOptError) -> InferenceScope {
        try InferenceScope(optimizer: self)
    }

    public func load(path: String, name: String? = nil) throws(PerfOptError) -> Model {
        try Model(optimizer: self, path: path, name: name)
    }
}

/// An open inference scope (libtorch's `c10::InferenceMode`), bound to the
/// thread that entered it. Scopes nest and exit innermost first, on their own
/// thread: `exit()` throws `.wrongThread` or `.scopeOrder` otherwise, and the
/// scope stays open.
///
/// A scope that was never exited is released when it goes (perfopt_scope_free),
/// from any thread: on its own thread as the innermost scope it exits as
/// `exit()` does; otherwise it is freed without restoring anything, and its
/// thread, if it still runs, stays in inference mode. Exit scopes explicitly
/// where that matters.
///
/// Not `Sendable`: a scope belongs to the thread that entered it.
public final class InferenceScope {
    private var handle: OpaquePointer?
    /// What the scope was entered on stays alive with it.
    private let optimizer: Optimizer

    init(optimizer: Optimizer) throws(PerfOptError) {
        var out: OpaquePointer?
        try check(perfopt_inference_enter(optimizer.handle, &out))
        guard let handle = out else {
            throw PerfOptError(code: Status.internal.rawValue, message: "perfopt_inference_enter returned no scope")
        }
        self.handle = handle
        self.optimizer = optimizer
    }

    /// Whether `exit()` has not succeeded yet.
    public var isOpen: Bool { handle != nil }

    /// Exits the scope (perfopt_inference_exit): on the thread that entered
    /// it, innermost first. Exiting a scope already exited does nothing.
    public func exit() throws(PerfOptError) {
        guard let scope = handle else { return }
        try check(perfopt_inference_exit(scope))
        handle = nil
    }

    deinit {
        if let scope = handle {
            perfopt_scope_free(scope)
        }
    }
}

/// perfopt's defaults, as the header's structs say (perfopt_config_default,
/// perfopt_model_options_default), for showing settings or starting from
/// them. The bindings fill the structs they pass with the size-checked _init
/// functions instead.
public enum Defaults {
    /// The optimizer settings perfopt starts from; nil fields mean "auto"
    /// (PERFOPT_AUTO or NULL: the TRANSLATOR_* variables, then the defaults).
    public struct Config: Sendable {
        public let readEnvironment: Bool
        public let device: String?
        public let cudnnBenchmark: Bool?
        public let tf32: Bool?
        public let cpuOptimization: Bool?
        public let torchCompile: Bool?
        public let compileMode: String?
        public let intraOpThreads: Int32
        public let interOpThreads: Int32
        public let mallocTuning: Bool?
        /// The ONNX Runtime library ONNX models run on; nil: found.
        public let onnxruntimeLibrary: String?
        /// Where max-autotune remembers choices for models whose options
        /// name no folder; models load as their tuning last chose. nil: none.
        public let tuningCacheDir: String?
    }

    public static func config() throws(PerfOptError) -> Config {
        var c = perfopt_config()
        try check(perfopt_config_default(&c))
        func triState(_ value: Int32) -> Bool? { value == PERFOPT_AUTO ? nil : value != 0 }
        return Config(readEnvironment: c.read_environment != 0,
                      device: c.device.map { String(cString: $0) },
                      cudnnBenchmark: triState(c.cudnn_benchmark),
                      tf32: triState(c.tf32),
                      cpuOptimization: triState(c.cpu_optimization),
                      torchCompile: triState(c.torch_compile),
                      compileMode: c.compile_mode.map { String(cString: $0) },
                      intraOpThreads: c.intra_op_threads,
                      interOpThreads: c.inter_op_threads,
                      mallocTuning: triState(c.malloc_tuning),
                      onnxruntimeLibrary: c.onnxruntime_library.map { String(cString: $0) },
                      tuningCacheDir: c.tuning_cache_dir.map { String(cString: $0) })
    }

    /// The model options perfopt starts from; change fields and pass to
    /// `Model.setOptions(_:)`.
    public static func modelOptions() throws(PerfOptError) -> ModelOptions {
        var o = perfopt_model_options()
        try check(perfopt_model_options_default(&o))
        return ModelOptions(outputsOnDevice: o.outputs_on_device != 0,
                            errorTolerance: o.error_tolerance,
                            graphCacheSize: o.graph_cache_size,
                            graphWarmupRuns: o.graph_warmup_runs,
                            memoryMargin: o.memory_margin,
                            tuningBudgetMs: o.tuning_budget_ms,
                            tuningCacheDir: o.tuning_cache_dir.map { String(cString: $0) },
                            threads: o.threads,
                            batchBudgetMs: o.batch_budget_ms,
                            precision: Precision(rawValue: o.precision) ?? .fp32,
                            reducedTolerance: o.reduced_tolerance,
                            minCosine: o.min_cosine)
    }
}

/// Which precisions max-autotune may choose from a bundle's forms
/// (perfopt_model_options.precision).
public enum Precision: Int32, Sendable {
    /// The model's own precision only (the default).
    case fp32 = 0
    /// Also a bundle's reduced-precision forms (bf16, fp16, int8), each kept
    /// only within `reducedTolerance` (or `minCosine`) of the fp32 result.
    case allowReduced = 1
}

/// Per-model options (perfopt_model_options), for `Model.setOptions(_:)`.
public struct ModelOptions: Sendable, Equatable {
    /// false: outputs are copied to host memory; true: they stay on the model's device.
    public var outputsOnDevice: Bool
    /// max-autotune keeps candidates whose relative error against fp32 eager is at most this.
    public var errorTolerance: Double
    /// CUDA graphs kept per model, one per input shape (1 to 1024).
    public var graphCacheSize: UInt32
    /// Runs before each CUDA-graph capture (0 to 100).
    public var graphWarmupRuns: UInt32
    /// Share of free memory `recommendBatch` leaves unused (0 to below 1).
    public var memoryMargin: Double
    /// Everything max-autotune's compile does, in ms (0 to 600000); 0: the device's default.
    public var tuningBudgetMs: UInt32
    /// Where max-autotune remembers its choices; nil: nowhere.
    public var tuningCacheDir: String?
    /// Threads per call, from the next compile on; 0: the optimizer's count
    /// (max-autotune measures it on the CPU).
    public var threads: UInt32
    /// Everything `recommendBatch` measures, in ms (0 to 600000); 0: 5000.
    public var batchBudgetMs: UInt32
    /// Whether max-autotune may choose a bundle's reduced-precision form.
    public var precision: Precision
    /// The relative error a reduced-precision form may have (default 1e-2).
    public var reducedTolerance: Double
    /// Above 0: reduced-precision forms are judged by cosine similarity
    /// (at least this) instead (embeddings).
    public var minCosine: Double

    public init(outputsOnDevice: Bool, errorTolerance: Double, graphCacheSize: UInt32, graphWarmupRuns: UInt32,
                memoryMargin: Double, tuningBudgetMs: UInt32, tuningCacheDir: String?, threads: UInt32 = 0,
                batchBudgetMs: UInt32 = 0, precision: Precision = .fp32, reducedTolerance: Double = 1e-2,
                minCosine: Double = 0) {
        self.outputsOnDevice = outputsOnDevice
        self.errorTolerance = errorTolerance
        self.graphCacheSize = graphCacheSize
        self.graphWarmupRuns = graphWarmupRuns
        self.memoryMargin = memoryMargin
        self.tuningBudgetMs = tuningBudgetMs
        self.tuningCacheDir = tuningCacheDir
        self.threads = threads
        self.batchBudgetMs = batchBudgetMs
        self.precision = precision
        self.reducedTolerance = reducedTolerance
        self.minCosine = minCosine
    }
}

func withOptionalCString<R>(_ string: String?, _ body: (UnsafePointer<CChar>?) throws(PerfOptError) -> R) rethrows -> R {
    guard let string = string else { return try body(nil) }
    return try string.withCString { try body($0) }
}
