import CPerfOpt
import Foundation

/// A loaded model: a TorchScript file or an AOTInductor package (perfopt_model_*).
///
/// `Sendable`: perfopt's model calls are thread-safe (the header's rule for
/// `const` handles). Running, calling, warm-up, batching and reports may be
/// used from several threads at once; compile, options and batch dimensions
/// change the model and are safe beside them (runs in progress finish on the
/// form they started with). A stateful model's runs change its state in the
/// order they happen: feed one stream from one thread at a time.
public final class Model: @unchecked Sendable {
    let handle: OpaquePointer
    /// The model keeps its optimizer (and what it configured) alive.
    private let optimizer: Optimizer

    /// Output slots a run offers first; more outputs are then taken with
    /// perfopt_model_take_outputs (the model never runs twice).
    static let outputSlots = 8
    /// Bytes offered for a warm-up or batch report; a longer one is read back
    /// with perfopt_model_last_report (the work is never done twice).
    static let reportBytes = 65536

    init(optimizer: Optimizer, path: String, name: String?) throws(PerfOptError) {
        var out: OpaquePointer?
        let status: StatusCode = path.withCString { pathPtr in
            withOptionalCString(name) { namePtr in
                perfopt_model_load(optimizer.handle, pathPtr, namePtr, &out)
            }
        }
        try check(status)
        guard let handle = out else {
            throw PerfOptError(code: Status.internal.rawValue, message: "perfopt_model_load returned no handle")
        }
        self.handle = handle
        self.optimizer = optimizer
    }

    deinit {
        perfopt_model_free(handle)
    }

    // MARK: Compiling

    /// Compiles the model. mode: "none", "default", "reduce-overhead",
    /// "max-autotune", or nil for the optimizer's. `warmup` inputs (optional)
    /// let shape-dependent work happen now rather than on the first run.
    ///
    /// Returns nil when compiled, or perfopt's note when compilation was
    /// skipped on this device (PERFOPT_COMPILE_SKIPPED, on MPS): that is not a
    /// failure, the model stays usable as loaded. Other failures throw.
    @discardableResult
    public func compile(mode: String? = nil, warmup: [Tensor] = []) throws(PerfOptError) -> String? {
        try checkSizes(warmup)
        let status: StatusCode = withOptionalCString(mode) { modePtr in
            withDLTensors(warmup) { perfopt_model_compile(handle, modePtr, $0, $1) }
        }
        return try compileNote(status)
    }

    /// `compile(mode:warmup:)` with warm-up arguments of any kind, for models
    /// that take more than tensors (an int sample rate, a list). Warm-up runs
    /// leave a stateful model's state as they found it.
    @discardableResult
    public func compile(mode: String? = nil, args: [Value]) throws(PerfOptError) -> String? {
        try checkSizes(args)
        let status: StatusCode = withOptionalCString(mode) { modePtr in
            withValues(args) { perfopt_model_compile_args(handle, modePtr, $0, $1) }
        }
        return try compileNote(status)
    }

    private func compileNote(_ status: StatusCode) throws(PerfOptError) -> String? {
        if status == Status.compileSkipped.rawValue {
            return perfopt_last_error().map { String(cString: $0) } ?? String(cString: perfopt_status_message(status))
        }
        try check(status)
        return nil
    }

    // MARK: Options

    /// Applies options; arguments left nil keep perfopt's defaults (see
    /// `Defaults.modelOptions()`). Graph settings and the tuning budget take
    /// effect at the next compile, `outputsOnDevice` at the next run.
    /// - tuningBudgetMs: everything max-autotune's compile does, 0 to 600000 ms;
    ///   0: the device's default (2000 on the CPU, 1000 on CUDA).
    /// - tuningCacheDir: a folder where max-autotune remembers its choice per
    ///   model file, device, input shapes and perfopt version; nil: the
    ///   optimizer's `tuningCacheDir`, else nothing is kept.
    /// - threads: per call of this model, from its next compile on; 0: the
    ///   count it was loaded at (the optimizer's, or under the optimizer's
    ///   `tuningCacheDir` the one its tuning last chose; max-autotune
    ///   measures it on the CPU).
    /// - batchBudgetMs: everything `recommendBatch` measures, 0 to 600000 ms;
    ///   0: 5000.
    /// - precision: `.allowReduced` lets max-autotune measure and choose a
    ///   bundle's reduced-precision forms, kept only within `reducedTolerance`
    ///   (relative error; nil: 1e-2) or, with `minCosine` above 0, at least
    ///   that cosine similarity to the fp32 result.
    public func setOptions(outputsOnDevice: Bool = false,
                           errorTolerance: Double? = nil,
                           graphCacheSize: UInt32? = nil,
                           graphWarmupRuns: UInt32? = nil,
                           memoryMargin: Double? = nil,
                           tuningBudgetMs: UInt32 = 0,
                           tuningCacheDir: String? = nil,
                           threads: UInt32 = 0,
                           batchBudgetMs: UInt32 = 0,
                           precision: Precision = .fp32,
                           reducedTolerance: Double? = nil,
                           minCosine: Double? = nil) throws(PerfOptError) {
        var options = perfopt_model_options()
        try check(perfopt_model_options_init(&options, cSize(of: perfopt_model_options.self)))
        options.outputs_on_device = outputsOnDevice ? 1 : 0
        if let errorTolerance = errorTolerance { options.error_tolerance = errorTolerance }
        if let graphCacheSize = graphCacheSize { options.graph_cache_size = graphCacheSize }
        if let graphWarmupRuns = graphWarmupRuns { options.graph_warmup_runs = graphWarmupRuns }
        if let memoryMargin = memoryMargin { options.memory_margin = memoryMargin }
        options.tuning_budget_ms = tuningBudgetMs
        options.threads = threads
        options.batch_budget_ms = batchBudgetMs
        options.precision = precision.rawValue
        if let reducedTolerance = reducedTolerance { options.reduced_tolerance = reducedTolerance }
        if let minCosine = minCosine { options.min_cosine = minCosine }
        // The folder is copied by the call: its C string need only live that long.
        let status: StatusCode = withOptionalCString(tuningCacheDir) { dir in
            options.tuning_cache_dir = dir
            return perfopt_model_set_options(handle, &options)
        }
        try check(status)
    }

    /// Applies every field of `options` (start from `Defaults.modelOptions()`).
    public func setOptions(_ options: ModelOptions) throws(PerfOptError) {
        try setOptions(outputsOnDevice: options.outputsOnDevice,
                       errorTolerance: options.errorTolerance,
                       graphCacheSize: options.graphCacheSize,
                       graphWarmupRuns: options.graphWarmupRuns,
                       memoryMargin: options.memoryMargin,
                       tuningBudgetMs: options.tuningBudgetMs,
                       tuningCacheDir: options.tuningCacheDir,
                       threads: options.threads,
                       batchBudgetMs: options.batchBudgetMs,
                       precision: options.precision,
                       reducedTolerance: options.reducedTolerance,
                       minCosine: options.minCosine)
    }

    // MARK: Running

    /// Runs forward() on tensors; every output is a tensor.
    public func run(_ inputs: [Tensor]) throws(PerfOptError) -> [Output] {
        try checkSizes(inputs)
        return try collect { outputs, capacity, count in
            withDLTensors(inputs) { perfopt_model_run(handle, $0, $1, outputs, capacity, count) }
        }
    }

    /// Calls forward() with arguments of any kind and returns its result as it is.
    public func call(_ args: [Value]) throws(PerfOptError) -> ResultValue {
        try call(nil, args)
    }

    /// Calls a method (nil: forward) with arguments of any kind and returns its
    /// result as it is (a tuple for several results). forward() goes through
    /// what compile chose; other methods (`reset_states`) run on the same
    /// compiled form and see the state forward() changes. A wrong argument
    /// throws `.invalidArgument` naming it and the type the schema wants.
    public func call(_ method: String?, _ args: [Value] = []) throws(PerfOptError) -> ResultValue {
        try checkSizes(args)
        var result: UnsafeMutablePointer<perfopt_value>?
        let status: StatusCode = withOptionalCString(method) { methodPtr in
            withValues(args) { perfopt_model_call(handle, methodPtr, $0, $1, &result) }
        }
        try check(status)
        guard let root = result else {
            throw PerfOptError(code: Status.internal.rawValue, message: "perfopt_model_call returned no result")
        }
        return try takeResult(root)
    }

    /// Inputs of any batch size (along each input's batch dimension, see
    /// `setBatchDims`; 0 by default), in chunks of at most `maxBatch` (0: the
    /// recommended size), halving on out-of-memory; outputs joined back.
    public func runBatched(_ inputs: [Tensor], maxBatch: Int32 = 0) throws(PerfOptError) -> [Output] {
        try checkSizes(inputs)
        return try collect { outputs, capacity, count in
            withDLTensors(inputs) { perfopt_model_run_batched(handle, $0, $1, maxBatch, outputs, capacity, count) }
        }
    }

    /// `runBatched` with arguments of any kind: non-tensor arguments (and
    /// tensors marked not batched) go whole to every chunk.
    public func runBatched(args: [Value], maxBatch: Int32 = 0) throws(PerfOptError) -> [Output] {
        try runBatched(args: args, maxBatch: maxBatch, outputSlots: Model.outputSlots)
    }

    /// `runBatched(args:maxBatch:)` offering `outputSlots` slots first (tests
    /// offer too few, to check that the outputs are taken, not recomputed).
    func runBatched(args: [Value], maxBatch: Int32, outputSlots: Int) throws(PerfOptError) -> [Output] {
        try checkSizes(args)
        return try collect(slots: outputSlots) { outputs, capacity, count in
            withValues(args) { perfopt_model_run_batched_args(handle, $0, $1, maxBatch, outputs, capacity, count) }
        }
    }

    /// How many outputs `run` hands out, without running: from the schema (a
    /// Tensor, a tuple of Tensors), else from the last run; nil when neither
    /// tells (a list, before any run).
    public func outputCount() throws(PerfOptError) -> Int? {
        var count = 0
        let status = perfopt_model_output_count(handle, &count)
        if status == Status.invalidArgument.rawValue {
            return nil
        }
        try check(status)
        return count
    }

    /// Where inputs and outputs carry their batch, for `runBatched` and
    /// `recommendBatch`: `inputs[i]` is input i's batch dimension, nil for an
    /// input passed whole to every chunk (PERFOPT_NOT_BATCHED); `outputs[k]`
    /// is output k's. Inputs and outputs past the lists use dimension 0.
    /// Empty lists reset.
    public func setBatchDims(inputs: [Int32?], outputs: [Int32]) throws(PerfOptError) {
        let inputDims = inputs.map { $0 ?? PERFOPT_NOT_BATCHED }
        let status: StatusCode = inputDims.withUnsafeBufferPointer { ins in
            outputs.withUnsafeBufferPointer { outs in
                perfopt_model_set_batch_dims(handle, inputDims.isEmpty ? nil : ins.baseAddress, ins.count,
                                             outputs.isEmpty ? nil : outs.baseAddress, outs.count)
            }
        }
        try check(status)
    }

    // MARK: Warm-up and batch size

    public func warmup(_ inputs: [Tensor], iterations: UInt32 = 3) throws(PerfOptError) -> WarmupReport {
        try checkSizes(inputs)
        let json = try keptReport(.warmup) { buffer, length, needed in
            withDLTensors(inputs) { perfopt_model_warmup(handle, $0, $1, iterations, buffer, length, needed) }
        }
        return try decode(WarmupReport.self, from: json)
    }

    /// `warmup` with arguments of any kind. A stateful model's state is left as found.
    public func warmup(args: [Value], iterations: UInt32 = 3) throws(PerfOptError) -> WarmupReport {
        try warmup(args: args, iterations: iterations, reportBytes: Model.reportBytes)
    }

    /// `warmup(args:iterations:)` offering `reportBytes` for the report first
    /// (tests offer too few, to check that it is read back, not measured again).
    func warmup(args: [Value], iterations: UInt32, reportBytes: Int) throws(PerfOptError) -> WarmupReport {
        try checkSizes(args)
        let json = try keptReport(.warmup, bytes: reportBytes) { buffer, length, needed in
            withValues(args) { perfopt_model_warmup_args(handle, $0, $1, iterations, buffer, length, needed) }
        }
        return try decode(WarmupReport.self, from: json)
    }

    /// Measures the model on one sample (size 1 along each batched input's
    /// batch dimension) and recommends a batch size; `runBatched` remembers it.
    public func recommendBatch(sample: [Tensor]) throws(PerfOptError) -> BatchRecommendation {
        try checkSizes(sample)
        var batch: Int32 = 0
        let json = try keptReport(.recommendBatch) { buffer, length, needed in
            withDLTensors(sample) { perfopt_model_recommend_batch(handle, $0, $1, &batch, buffer, length, needed) }
        }
        return try decode(BatchRecommendation.self, from: json)
    }

    /// `recommendBatch` with arguments of any kind (non-tensor arguments are not batched).
    public func recommendBatch(args: [Value]) throws(PerfOptError) -> BatchRecommendation {
        try checkSizes(args)
        var batch: Int32 = 0
        let json = try keptReport(.recommendBatch) { buffer, length, needed in
            withValues(args) { perfopt_model_recommend_batch_args(handle, $0, $1, &batch, buffer, length, needed) }
        }
        return try decode(BatchRecommendation.self, from: json)
    }

    /// Which kept report `lastReport` reads.
    public enum ReportKind: Sendable {
        case warmup, recommendBatch

        var code: Int32 {
            switch self {
            case .warmup: return PERFOPT_REPORT_WARMUP
            case .recommendBatch: return PERFOPT_REPORT_RECOMMEND_BATCH
            }
        }
    }

    /// The JSON report of the last warm-up or batch recommendation on this
    /// model (from any thread), without doing the work again; nil when there
    /// is none yet.
    public func lastReport(kind: ReportKind) throws(PerfOptError) -> String? {
        do {
            return try readReport { perfopt_model_last_report(handle, kind.code, $0, $1, $2) }
        } catch where error.status == .invalidArgument {
            return nil
        }
    }

    // MARK: Reports and methods

    public func report() throws(PerfOptError) -> ModelReport {
        try decode(ModelReport.self, from: reportJSON())
    }

    /// perfopt_model_report's JSON, with the fields `ModelReport` leaves out.
    public func reportJSON() throws(PerfOptError) -> String {
        try readReport { perfopt_model_report(handle, $0, $1, $2) }
    }

    /// The model's methods with their schemas (perfopt_model_methods).
    public func methods() throws(PerfOptError) -> [MethodInfo] {
        try decode([MethodInfo].self, from: readReport { perfopt_model_methods(handle, $0, $1, $2) })
    }

    // MARK: Plumbing

    /// Runs a call that does work and writes a report: when the report does not
    /// fit, it is read back with perfopt_model_last_report rather than running
    /// the call again.
    private func keptReport(
        _ kind: ReportKind,
        bytes: Int = Model.reportBytes,
        _ call: (UnsafeMutablePointer<CChar>?, Int, UnsafeMutablePointer<Int>) -> StatusCode
    ) throws(PerfOptError) -> String {
        var buffer = [CChar](repeating: 0, count: max(bytes, 1))
        var needed = 0
        let status = buffer.withUnsafeMutableBufferPointer { call($0.baseAddress, $0.count, &needed) }
        if status == Status.bufferTooSmall.rawValue {
            return try readReport { perfopt_model_last_report(handle, kind.code, $0, $1, $2) }
        }
        try check(status)
        return text(of: buffer)
    }

    /// Runs a call that hands out outputs. When they do not fit, the call has
    /// kept them for this thread: perfopt_model_take_outputs takes them
    /// without running the model again.
    private func collect(
        slots offered: Int = Model.outputSlots,
        _ call: (UnsafeMutablePointer<UnsafeMutablePointer<DLManagedTensor>?>?, Int, UnsafeMutablePointer<Int>) -> StatusCode
    ) throws(PerfOptError) -> [Output] {
        var slots = [UnsafeMutablePointer<DLManagedTensor>?](repeating: nil, count: max(offered, 1))
        var count = 0
        var status = slots.withUnsafeMutableBufferPointer { call($0.baseAddress, $0.count, &count) }
        if status == Status.bufferTooSmall.rawValue && count > slots.count {
            slots = [UnsafeMutablePointer<DLManagedTensor>?](repeating: nil, count: count)
            status = slots.withUnsafeMutableBufferPointer {
                perfopt_model_take_outputs(handle, $0.baseAddress, $0.count, &count)
            }
        }
        try check(status)
        return slots.prefix(count).compactMap { $0.map(Output.init) }
    }
}
