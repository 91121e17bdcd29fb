import CPerfOpt
import Foundation

/// A TorchScript model (perfopt_model_*). Safe to run from several threads.
public final class Model {
    let handle: OpaquePointer
    /// The model keeps its optimizer (and what it configured) alive.
    private let optimizer: Optimizer

    init(optimizer: Optimizer, path: String, name: String?) throws {
        var out: OpaquePointer?
        let status: perfopt_status = path.withCString { pathPtr in
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

    /// mode: "none", "default", "reduce-overhead", "max-autotune", or nil for
    /// the optimizer's. Throws `.compileSkipped` on MPS (the model stays usable).
    public func compile(mode: String? = nil, warmup: [Tensor] = []) throws {
        let status: perfopt_status = withOptionalCString(mode) { modePtr in
            withDLTensors(warmup) { perfopt_model_compile(handle, modePtr, $0, $1) }
        }
        try check(status)
    }

    public func setOptions(outputsOnDevice: Bool = false, errorTolerance: Double = 1e-3) throws {
        var options = perfopt_model_options()
        try check(perfopt_model_options_default(&options))
        options.outputs_on_device = outputsOnDevice ? 1 : 0
        options.error_tolerance = errorTolerance
        try check(perfopt_model_set_options(handle, &options))
    }

    public func warmup(_ inputs: [Tensor], iterations: UInt32 = 3) throws -> WarmupReport {
        var buffer = [CChar](repeating: 0, count: 65536)
        var needed = 0
        let status: perfopt_status = withDLTensors(inputs) { tensors, count in
            buffer.withUnsafeMutableBufferPointer {
                perfopt_model_warmup(handle, tensors, count, iterations, $0.baseAddress, $0.count, &needed)
            }
        }
        try check(status)
        return try decode(WarmupReport.self, from: String(cString: buffer))
    }

    public func run(_ inputs: [Tensor]) throws -> [Output] {
        try collect { outputs, capacity, count in
            withDLTensors(inputs) { perfopt_model_run(handle, $0, $1, outputs, capacity, count) }
        }
    }

    /// Inputs of any size along dimension 0, in chunks of at most `maxBatch`
    /// (0: the recommended size), halving on out-of-memory.
    public func runBatched(_ inputs: [Tensor], maxBatch: Int32 = 0) throws -> [Output] {
        try collect { outputs, capacity, count in
            withDLTensors(inputs) { perfopt_model_run_batched(handle, $0, $1, maxBatch, outputs, capacity, count) }
        }
    }

    public func recommendBatch(sample: [Tensor]) throws -> BatchRecommendation {
        var batch: Int32 = 0
        var buffer = [CChar](repeating: 0, count: 65536)
        var needed = 0
        let status: perfopt_status = withDLTensors(sample) { tensors, count in
            buffer.withUnsafeMutableBufferPointer {
                perfopt_model_recommend_batch(handle, tensors, count, &batch, $0.baseAddress, $0.count, &needed)
            }
        }
        try check(status)
        return try decode(BatchRecommendation.self, from: String(cString: buffer))
    }

    public func report() throws -> ModelReport {
        try decode(ModelReport.self, from: readReport { perfopt_model_report(handle, $0, $1, $2) })
    }

    private func collect(
        _ call: (UnsafeMutablePointer<UnsafeMutablePointer<DLManagedTensor>?>?, Int, UnsafeMutablePointer<Int>) -> perfopt_status
    ) throws -> [Output] {
        var slots = [UnsafeMutablePointer<DLManagedTensor>?](repeating: nil, count: 8)
        var count = 0
        var status = slots.withUnsafeMutableBufferPointer { call($0.baseAddress, $0.count, &count) }
        if status == Status.bufferTooSmall.rawValue && count > slots.count {
            slots = [UnsafeMutablePointer<DLManagedTensor>?](repeating: nil, count: count)
            status = slots.withUnsafeMutableBufferPointer { call($0.baseAddress, $0.count, &count) }
        }
        try check(status)
        return slots.prefix(count).compactMap { $0.map(Output.init) }
    }
}
