import Foundation
import XCTest
@testable import PerfOpt

/// The checkout this file is in (bindings/swift/Tests/PerfOptTests/ is four
/// folders down), so that the fixtures are found from any working directory.
private let checkout = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A folder named by an environment variable, else one of the checkout's.
private func folder(_ variable: String, else relative: String) -> URL {
    if let dir = ProcessInfo.processInfo.environment[variable], !dir.isEmpty {
        return URL(fileURLWithPath: dir)
    }
    return checkout.appendingPathComponent(relative)
}

/// Run by `make test-swift` against the built library, on the fixtures
/// `make fixtures` writes (PERFOPT_FIXTURES) and the AOTInductor packages of
/// `make packages` (PERFOPT_PACKAGES; skipped where there are none).
/// tests/cpp/swift_mirror.c replays the same C calls, for machines without a
/// Swift toolchain.
final class PerfOptTests: XCTestCase {
    private var fixtures: URL { folder("PERFOPT_FIXTURES", else: "build/fixtures") }

    private func fixture(_ name: String) -> String {
        fixtures.appendingPathComponent(name).path
    }

    private func loadNpy(_ name: String) throws -> Npy {
        try Npy(contentsOf: fixtures.appendingPathComponent(name))
    }

    func testVersionAndABI() throws {
        try checkABI()
        XCTAssertEqual(abiVersion, 6)
        XCTAssertTrue(version.hasPrefix("perfopt 0.1.0"))
    }

    func testOptimizerReportOnCPU() throws {
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        let report = try optimizer.report()
        XCTAssertEqual(report.device.kind, "cpu")
        XCTAssertEqual(report.batchSize.serviceRule, 1)
        XCTAssertEqual(try optimizer.optimalBatchSize(), 1)
        XCTAssertTrue(report.skipped.contains { $0.setting == "cudnn_benchmark" })
    }

    func testTuningCacheDirReachesTheOptimizer() throws {
        let dir = NSTemporaryDirectory() + "perfopt-swift-config-cache"
        let optimizer = try Optimizer(device: "cpu", tuningCacheDir: dir, readEnvironment: false)
        XCTAssertTrue(try optimizer.reportJSON().contains("\"tuning_cache_dir\":\"\(dir)\""))
        XCTAssertThrowsError(try Optimizer(device: "cpu", tuningCacheDir: "", readEnvironment: false)) { error in
            XCTAssertEqual((error as? PerfOptError)?.status, .invalidArgument)
        }
    }

    func testUnknownDeviceThrows() {
        XCTAssertThrowsError(try Optimizer(device: "tpu", readEnvironment: false)) { error in
            let error = error as? PerfOptError
            XCTAssertEqual(error?.status, .invalidArgument)
            XCTAssertTrue(error?.message.contains("tpu") ?? false)
            XCTAssertEqual(error?.name, "PERFOPT_ERR_INVALID_ARGUMENT")
            XCTAssertEqual(error?.summary, "An argument is out of range or names something unknown.")
        }
    }

    func testDefaultsAreTheLibrarys() throws {
        let config = try Defaults.config()
        XCTAssertTrue(config.readEnvironment)
        XCTAssertNil(config.device)  // NULL: "auto"
        XCTAssertNil(config.cudnnBenchmark)
        XCTAssertNil(config.torchCompile)
        XCTAssertNil(config.compileMode)
        XCTAssertEqual(config.intraOpThreads, 0)
        let options = try Defaults.modelOptions()
        XCTAssertFalse(options.outputsOnDevice)
        XCTAssertEqual(options.errorTolerance, 1e-3)
        XCTAssertEqual(options.graphCacheSize, 8)
        XCTAssertEqual(options.graphWarmupRuns, 3)
        XCTAssertEqual(options.memoryMargin, 0.1)
        XCTAssertEqual(options.tuningBudgetMs, 0)
        XCTAssertNil(options.tuningCacheDir)
    }

    func testInferenceScopeNests() throws {
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        let value = try optimizer.withInferenceScope {
            try optimizer.withInferenceScope { 42 }
        }
        XCTAssertEqual(value, 42)
    }

    func testInferenceScopeObjectsExitInOrderAndFreeFromAnyThread() throws {
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        let outer = try optimizer.enterInferenceScope()
        let inner = try optimizer.enterInferenceScope()
        XCTAssertThrowsError(try outer.exit()) { error in
            XCTAssertEqual((error as? PerfOptError)?.status, .scopeOrder)
        }
        XCTAssertTrue(outer.isOpen)
        try inner.exit()
        try outer.exit()
        XCTAssertFalse(outer.isOpen)
        try outer.exit()  // exited already: nothing to do, no C call
        // A scope never exited is released by perfopt_scope_free when it goes:
        // here on its own thread as the innermost scope, so it exits.
        var dropped: InferenceScope? = try optimizer.enterInferenceScope()
        XCTAssertTrue(dropped?.isOpen ?? false)
        dropped = nil
        // Entered on another thread, released from this one (without
        // restoring anything on that thread).
        let elsewhere = ScopeBox(optimizer)
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            elsewhere.scope = try? elsewhere.optimizer.enterInferenceScope()
            done.signal()
        }
        thread.start()
        done.wait()
        XCTAssertTrue(elsewhere.scope?.isOpen ?? false)
        elsewhere.scope = nil
    }

    func testVocoderRunsAndReports() throws {
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        let model = try optimizer.load(path: fixtures.appendingPathComponent("vocoder.pt").path, name: "vocoder")
        let mel = Tensor(floats: [Float](repeating: 0.1, count: 2 * 80 * 32), shape: [2, 80, 32])
        XCTAssertNil(try model.compile(mode: "default", warmup: [mel]))
        let warm = try model.warmup([mel], iterations: 3)
        XCTAssertTrue(warm.success)
        let outputs = try optimizer.withInferenceScope { try model.run([mel]) }
        XCTAssertEqual(outputs.count, 1)
        XCTAssertEqual(outputs[0].shape, [2, 1, 512])
        XCTAssertEqual(outputs[0].floats.count, 1024)
        let report = try model.report()
        XCTAssertEqual(report.calls, 1)
        XCTAssertEqual(report.compile.requestedMode, "default")
    }

    func testBadInputsThrowAndTheModelStaysUsable() throws {
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        let model = try optimizer.load(path: fixtures.appendingPathComponent("two_inputs.pt").path)
        let x = Tensor(floats: [Float](repeating: 1, count: 2 * 16), shape: [2, 16])
        let y = Tensor(floats: [Float](repeating: 1, count: 2 * 4), shape: [2, 4])
        XCTAssertThrowsError(try model.run([x])) { error in
            XCTAssertEqual((error as? PerfOptError)?.status, .invalidArgument)
        }
        XCTAssertThrowsError(try model.compile(mode: "fastest"))
        XCTAssertEqual(try model.run([x, y]).count, 2)
    }

    func testMissingModelFileThrows() throws {
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        XCTAssertThrowsError(try optimizer.load(path: "/nonexistent/model.pt")) { error in
            XCTAssertEqual((error as? PerfOptError)?.status, .fileNotFound)
        }
    }

    func testADirectoryIsNotAModelFile() throws {
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        XCTAssertThrowsError(try optimizer.load(path: fixtures.path)) { error in
            XCTAssertEqual((error as? PerfOptError)?.status, .notAFile)
        }
    }

    /// stateful.pt: forward(x, sr: int) keeps a state; reset_states() clears
    /// it; encode(x) returns (Tensor, int). Compiled with warm-up arguments
    /// (which must not advance the state), it streams as PyTorch did.
    func testStatefulModelStreamsWithValuesAndMethods() throws {
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        let model = try optimizer.load(path: fixture("stateful.pt"))
        let methods = try model.methods()
        for name in ["forward", "reset_states", "encode"] {
            XCTAssertTrue(methods.contains { $0.name == name }, name)
        }
        let forward = try XCTUnwrap(methods.first { $0.name == "forward" })
        XCTAssertEqual(forward.arguments.map { $0.name }, ["x", "sr"])
        XCTAssertEqual(forward.arguments[1].typeName, "int")
        let chunks = try (0..<20).map { try loadNpy("stateful.chunk\($0).npy") }
        let expected = try (0..<20).map { try loadNpy("stateful.expected\($0).npy") }
        XCTAssertNil(try model.compile(mode: "default", args: [.tensor(chunks[0].tensor), .int(16000)]))
        for round in 0..<2 {
            for i in 0..<20 {
                let output = try XCTUnwrap(model.call([.tensor(chunks[i].tensor), .int(16000)]).tensorValue)
                XCTAssertEqual(output.shape, expected[i].shape)
                XCTAssertLessThanOrEqual(relativeError(output.floats, expected[i].floats), 1e-5,
                                         "round \(round), chunk \(i)")
            }
            XCTAssertTrue(try model.call("reset_states").isNone)
        }
        // encode() returns a tuple of a tensor and the calls since the reset.
        let encoded = try XCTUnwrap(model.call("encode", [.tensor(chunks[0].tensor)]).items)
        XCTAssertEqual(encoded.count, 2)
        XCTAssertEqual(encoded[0].tensorValue?.shape, [1, 64])
        XCTAssertEqual(encoded[1].intValue, 0)
        // An unknown method is refused with the ones there are; a wrong
        // argument with its name and the type the schema wants.
        XCTAssertThrowsError(try model.call("nope")) { error in
            let error = error as? PerfOptError
            XCTAssertEqual(error?.status, .invalidArgument)
            XCTAssertTrue(error?.message.contains("reset_states") ?? false)
        }
        XCTAssertThrowsError(try model.call([.tensor(chunks[0].tensor), .string("16k")])) { error in
            let message = (error as? PerfOptError)?.message ?? ""
            XCTAssertTrue(message.contains("`sr`") && message.contains("int"), message)
        }
    }

    /// kinds.pt takes every argument kind and returns (Tensor, int, bool, str, List[int]).
    func testEveryArgumentKindGoesInAndComesBack() throws {
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        let model = try optimizer.load(path: fixture("kinds.pt"))
        let x = try loadNpy("kinds.x.npy")
        let ones = Tensor(floats: [Float](repeating: 1, count: 6), shape: [2, 3])
        let twos = Tensor(floats: [Float](repeating: 2, count: 6), shape: [2, 3])
        let args: [Value] = [
            .tensor(x.tensor), .int(3), .double(0.5), .bool(true), .string("vad"), .tensor(twos),
            .list([.tensor(ones), .tensor(ones)]), .list([.int(1), .int(2)]),
            .list([.int(2), .double(0.25)]),  // a list where the schema wants a tuple
        ]
        let result = try model.call("forward", args)
        guard case .tuple(let items) = result else {
            return XCTFail("forward returns a tuple")
        }
        XCTAssertEqual(items.count, 5)
        let y = try loadNpy("kinds.y.npy")
        let output = try XCTUnwrap(items[0].tensorValue)
        XCTAssertEqual(output.shape, y.shape)
        XCTAssertLessThanOrEqual(relativeError(output.floats, y.floats), 1e-6)
        XCTAssertEqual(items[1].intValue, 5)
        XCTAssertEqual(items[2].boolValue, false)
        XCTAssertEqual(items[3].stringValue, "vad!")
        guard case .list(let dims) = items[4] else {
            return XCTFail("dims come back as a list")
        }
        XCTAssertEqual(dims.compactMap { $0.intValue }, [2, 4])
        // An int where a float is wanted, None for the Optional, empty string
        // and lists, a tuple.
        let plain = try XCTUnwrap(model.call([
            .tensor(x.tensor), .int(3), .int(1), .bool(false), .string(""), .none,
            .list([]), .list([]), .tuple([.int(0), .double(0)]),
        ]).items)
        XCTAssertEqual(plain[0].tensorValue?.floats, [Float](repeating: 4, count: 6))
        XCTAssertEqual(plain[1].intValue, 3)
        XCTAssertEqual(plain[2].boolValue, true)
        XCTAssertEqual(plain[3].stringValue, "!")
        XCTAssertEqual(plain[4].items?.count, 0)
    }

    /// lstm_state.pt: x carries the batch in dimension 0, the LSTM state (h, c)
    /// in dimension 1, the mask is not batched; outputs likewise.
    func testBatchDimensionsOtherThanZero() throws {
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        let model = try optimizer.load(path: fixture("lstm_state.pt"))
        let inputs = try (0..<4).map { try loadNpy("lstm_state.input\($0).npy") }
        let expected = try (0..<3).map { try loadNpy("lstm_state.output\($0).npy") }
        let args = inputs.map { Value.tensor($0.tensor) }
        // Dimension 0 everywhere cannot work: h and c have 2 there, x has 5.
        XCTAssertThrowsError(try model.runBatched(args: args, maxBatch: 2)) { error in
            XCTAssertTrue(((error as? PerfOptError)?.message ?? "").contains("same batch size"))
        }
        try model.setBatchDims(inputs: [0, 1, 1, nil], outputs: [0, 1, 1])
        for chunk: Int32 in [1, 2, 5, 0] {
            let outputs = try model.runBatched(args: args, maxBatch: chunk)
            XCTAssertEqual(outputs.count, 3)
            for k in 0..<min(outputs.count, 3) {
                XCTAssertEqual(outputs[k].shape, expected[k].shape)
                XCTAssertLessThanOrEqual(relativeError(outputs[k].floats, expected[k].floats), 1e-5,
                                         "chunks of \(chunk), output \(k)")
            }
        }
        // Too few slots: the outputs wait and are taken, the model does not run again.
        let taken = try model.runBatched(args: args, maxBatch: 2, outputSlots: 1)
        XCTAssertEqual(taken.count, 3)
        for k in 0..<min(taken.count, 3) {
            XCTAssertLessThanOrEqual(relativeError(taken[k].floats, expected[k].floats), 1e-5, "taken output \(k)")
        }
        // One sample: size 1 along each batched input's dimension, the mask whole.
        let sample: [Value] = [
            .tensor(inputs[0].first(along: 0)), .tensor(inputs[1].first(along: 1)),
            .tensor(inputs[2].first(along: 1)), .tensor(inputs[3].tensor),
        ]
        let recommendation = try model.recommendBatch(args: sample)
        XCTAssertGreaterThanOrEqual(recommendation.recommendedBatch, 1)
        let kept = try XCTUnwrap(model.lastReport(kind: .recommendBatch))
        XCTAssertEqual(try decode(BatchRecommendation.self, from: kept).recommendedBatch,
                       recommendation.recommendedBatch)
        // Outputs whose batch is not where the dimensions say are refused.
        try model.setBatchDims(inputs: [0, 1, 1, nil], outputs: [0, 0, 0])
        XCTAssertThrowsError(try model.runBatched(args: args, maxBatch: 2)) { error in
            XCTAssertTrue(((error as? PerfOptError)?.message ?? "").contains("output 1"))
        }
        // Empty lists reset to dimension 0 everywhere.
        try model.setBatchDims(inputs: [], outputs: [])
        XCTAssertThrowsError(try model.runBatched(args: args, maxBatch: 2))
    }

    /// PERFOPT_COMPILE_SKIPPED comes only on MPS: compile returns its note and
    /// the model runs as loaded. Skipped where there is no MPS device.
    func testCompileSkippedIsANoteNotAFailure() throws {
        let optimizer: Optimizer
        switch Result(catching: { () throws(PerfOptError) in try Optimizer(device: "mps", readEnvironment: false) }) {
        case .success(let made):
            optimizer = made
        case .failure(let error) where error.status == .unsupportedDevice:
            throw XCTSkip("compilation is skipped only on MPS, and there is none here: \(error.message)")
        case .failure(let error):
            throw error
        }
        let model = try optimizer.load(path: fixture("vocoder.pt"), name: "vocoder")
        let mel = Tensor(floats: [Float](repeating: 0.1, count: 2 * 80 * 32), shape: [2, 80, 32])
        let note = try model.compile(mode: "default", warmup: [mel])
        XCTAssertNotNil(note)
        XCTAssertEqual(try model.run([mel]).first?.shape, [2, 1, 512])
    }

    func testOutputCountWithoutRunning() throws {
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        XCTAssertEqual(try optimizer.load(path: fixture("vocoder.pt")).outputCount(), 1)
        XCTAssertEqual(try optimizer.load(path: fixture("two_inputs.pt")).outputCount(), 2)
        XCTAssertEqual(try optimizer.load(path: fixture("lstm_state.pt")).outputCount(), 3)
        // A tuple mixing kinds, before any run: nothing tells.
        XCTAssertNil(try optimizer.load(path: fixture("kinds.pt")).outputCount())
    }

    func testWarmupReportIsKeptAndReadBack() throws {
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        let model = try optimizer.load(path: fixture("speaker.pt"))
        let input = try loadNpy("speaker.input0.npy")
        XCTAssertNil(try model.lastReport(kind: .warmup))
        let warm = try model.warmup([input.tensor], iterations: 3)
        XCTAssertEqual(warm.iterations, 3)
        let kept = try XCTUnwrap(model.lastReport(kind: .warmup))
        XCTAssertEqual(try decode(WarmupReport.self, from: kept).iterations, 3)
        // A report that does not fit is read back, not measured again.
        let again = try model.warmup(args: [.tensor(input.tensor)], iterations: 2, reportBytes: 16)
        XCTAssertEqual(again.iterations, 2)
        XCTAssertTrue(again.success)
        XCTAssertNil(try model.lastReport(kind: .recommendBatch))
        XCTAssertThrowsError(try model.warmup([input.tensor], iterations: .max)) { error in
            XCTAssertEqual((error as? PerfOptError)?.status, .invalidArgument)
        }
    }

    func testOptionsWithTheTuningFields() throws {
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        let model = try optimizer.load(path: fixture("two_inputs.pt"))
        try model.setOptions(tuningBudgetMs: 500, tuningCacheDir: "/tmp/perfopt-swift-tuning")
        XCTAssertThrowsError(try model.setOptions(tuningBudgetMs: 600_001)) { error in
            XCTAssertEqual((error as? PerfOptError)?.status, .invalidArgument)
        }
        var options = try Defaults.modelOptions()
        XCTAssertEqual(options.precision, .fp32)
        XCTAssertEqual(options.reducedTolerance, 1e-2)
        options.errorTolerance = 1e-2
        options.tuningBudgetMs = 250
        try model.setOptions(options)
        // Reduced precision, opt-in, within a bound the caller states.
        try model.setOptions(precision: .allowReduced, reducedTolerance: 5e-2)
        XCTAssertThrowsError(try model.setOptions(precision: .allowReduced, minCosine: 2)) { error in
            XCTAssertEqual((error as? PerfOptError)?.status, .invalidArgument)
        }
    }

    /// The folder of `make packages` (its path is in build/packages.txt).
    private func packages() throws -> URL {
        if let dir = ProcessInfo.processInfo.environment["PERFOPT_PACKAGES"], !dir.isEmpty {
            return URL(fileURLWithPath: dir)
        }
        let listed = checkout.appendingPathComponent("build/packages.txt")
        guard let text = try? String(contentsOf: listed, encoding: .utf8) else {
            throw XCTSkip("no AOTInductor packages: run `make packages` (or set PERFOPT_PACKAGES)")
        }
        return URL(fileURLWithPath: text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// An AOTInductor package runs like a TorchScript file: every compile
    /// mode, warm-up, batching, and its output equal to eager PyTorch's.
    func testPackageRunsInEveryMode() throws {
        let dir = try packages()
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        let model = try optimizer.load(path: dir.appendingPathComponent("vocoder.pt2").path)
        let mel = try Npy(contentsOf: dir.appendingPathComponent("vocoder.input0.npy"))
        let expected = try Npy(contentsOf: dir.appendingPathComponent("vocoder.output0.npy"))
        for mode in ["none", "default", "reduce-overhead", "max-autotune"] {
            XCTAssertNil(try model.compile(mode: mode, warmup: [mel.tensor]), mode)
            let outputs = try optimizer.withInferenceScope { try model.run([mel.tensor]) }
            XCTAssertEqual(outputs.first?.shape, expected.shape, mode)
            XCTAssertLessThanOrEqual(relativeError(outputs.first?.floats ?? [], expected.floats), 1e-5, mode)
        }
        XCTAssertTrue(try model.warmup([mel.tensor], iterations: 2).success)
        XCTAssertEqual(try model.runBatched([mel.tensor], maxBatch: 1).first?.shape, expected.shape)
        XCTAssertEqual(try model.methods().map(\.name), ["forward"])
        XCTAssertEqual(try model.outputCount(), 1)
    }

    /// An ONNX model runs like the other formats (ONNX Runtime, found beside
    /// torch): every compile mode, a thread count of its own, warm-up,
    /// batching, and the recurrent state passed through inputs and outputs.
    func testOnnxModelRunsInEveryMode() throws {
        let dir = try packages()
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        let model = try optimizer.load(path: dir.appendingPathComponent("vocoder.onnx").path)
        let mel = try Npy(contentsOf: dir.appendingPathComponent("vocoder.input0.npy"))
        let expected = try Npy(contentsOf: dir.appendingPathComponent("vocoder.output0.npy"))
        try model.setOptions(threads: 1)
        for mode in ["none", "default", "reduce-overhead", "max-autotune"] {
            XCTAssertNil(try model.compile(mode: mode, warmup: [mel.tensor]), mode)
            let outputs = try model.run([mel.tensor])
            XCTAssertEqual(outputs.first?.shape, expected.shape, mode)
            XCTAssertLessThanOrEqual(relativeError(outputs.first?.floats ?? [], expected.floats), 1e-4, mode)
        }
        XCTAssertEqual(try model.report().format, "onnx")
        XCTAssertTrue(try model.warmup([mel.tensor], iterations: 2).success)
        XCTAssertEqual(try model.runBatched([mel.tensor], maxBatch: 1).first?.shape, expected.shape)
        XCTAssertEqual(try model.methods().map(\.name), ["forward"])

        let step = try optimizer.load(path: dir.appendingPathComponent("recurrent.onnx").path)
        let chunk = try Npy(contentsOf: dir.appendingPathComponent("recurrent.input0.npy"))
        var state = try Npy(contentsOf: dir.appendingPathComponent("recurrent.input1.npy")).tensor
        for _ in 0..<3 {
            let outputs = try step.run([chunk.tensor, state])
            XCTAssertEqual(outputs.count, 2)
            state = Tensor(floats: outputs[1].floats, shape: outputs[1].shape)
        }
        XCTAssertThrowsError(try optimizer.load(path: dir.appendingPathComponent("truncated.onnx").path)) { error in
            XCTAssertEqual((error as? PerfOptError)?.status, .modelCorrupt)
        }
    }

    /// A bundle (perfopt.export's NAME.perfopt folder) loads like a file;
    /// max-autotune measures its forms against each other and runs the winner.
    func testBundleRunsTheFormMaxAutotuneChose() throws {
        let dir = try packages()
        let path = dir.appendingPathComponent("two_inputs.perfopt").path
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        let model = try optimizer.load(path: path)
        let inputs = try (0..<2).map { try Npy(contentsOf: dir.appendingPathComponent("two_inputs.input\($0).npy")) }
        let expected = try (0..<2).map {
            try Npy(contentsOf: dir.appendingPathComponent("two_inputs.output\($0).npy"))
        }
        XCTAssertEqual(try model.report().bundle?.forms, ["onnx", "torchscript"])
        XCTAssertNil(try model.compile(mode: "max-autotune", warmup: inputs.map(\.tensor)))
        let report = try model.report()
        XCTAssertTrue(["onnx", "torchscript"].contains(report.format), report.format)
        XCTAssertTrue(report.compile.chosen.hasPrefix(report.format + ": "), report.compile.chosen)
        let outputs = try model.run(inputs.map(\.tensor))
        XCTAssertEqual(outputs.count, expected.count)
        for (got, want) in zip(outputs, expected) {
            XCTAssertLessThanOrEqual(relativeError(got.floats, want.floats), 1e-4)
        }
        XCTAssertEqual(try InputSpec.recorded(besideModelAt: path)?.map(\.name), ["x", "y"])
    }

    /// An ExecuTorch program (.pte) runs like eager; a truncated one is refused by status.
    func testExecuTorchProgramRunsLikeEager() throws {
        let dir = try packages()
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        let model = try optimizer.load(path: dir.appendingPathComponent("two_inputs.pte").path)
        let inputs = try (0..<2).map { try Npy(contentsOf: dir.appendingPathComponent("two_inputs.input\($0).npy")) }
        let expected = try (0..<2).map {
            try Npy(contentsOf: dir.appendingPathComponent("two_inputs.output\($0).npy"))
        }
        XCTAssertNil(try model.compile(mode: "max-autotune", warmup: inputs.map(\.tensor)))
        XCTAssertEqual(try model.report().format, "executorch")
        let outputs = try model.run(inputs.map(\.tensor))
        XCTAssertEqual(outputs.count, expected.count)
        for (got, want) in zip(outputs, expected) {
            XCTAssertLessThanOrEqual(relativeError(got.floats, want.floats), 1e-4)
        }
        XCTAssertThrowsError(try optimizer.load(path: dir.appendingPathComponent("truncated.pte").path)) { error in
            XCTAssertEqual((error as? PerfOptError)?.status, .modelCorrupt, "\(error)")
        }
    }

    /// Broken packages are refused with their own status, before libtorch sees them.
    func testBrokenPackagesAreRefusedByStatus() throws {
        let dir = try packages()
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        let cases: [(String, Status)] = [
            ("cpp_only.pt2", .unsupportedModel), ("wrong_device.pt2", .unsupportedDevice),
            ("bad_library.pt2", .modelCorrupt), ("truncated.pt2", .modelCorrupt),
        ]
        for (name, status) in cases {
            XCTAssertThrowsError(try optimizer.load(path: dir.appendingPathComponent(name).path), name) { error in
                XCTAssertEqual((error as? PerfOptError)?.status, status, "\(name): \(error)")
            }
        }
    }

    /// Every call of this package throws `PerfOptError` itself (typed throws):
    /// a `catch` reads the status without a cast.
    func testErrorsAreTyped() {
        do {
            _ = try Optimizer(device: "tpu", readEnvironment: false)
            XCTFail("an unknown device is refused")
        } catch {
            XCTAssertEqual(error.status, .invalidArgument)
            XCTAssertEqual(error.code, 2)
            XCTAssertTrue(error.description.hasPrefix("PERFOPT_ERR_INVALID_ARGUMENT: "), error.description)
        }
    }

    /// Models and outputs are `Sendable`: one model runs from several tasks at once.
    func testOneModelRunsFromConcurrentTasks() async throws {
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        let model = try optimizer.load(path: fixture("two_inputs.pt"))
        let x = Tensor(floats: [Float](repeating: 1, count: 2 * 16), shape: [2, 16])
        let y = Tensor(floats: [Float](repeating: 1, count: 2 * 4), shape: [2, 4])
        let serial = try model.run([x, y]).map(\.floats)
        let results = try await withThrowingTaskGroup(of: [[Float]].self) { group in
            for _ in 0..<8 {
                group.addTask { try model.run([x, y]).map(\.floats) }
            }
            var all: [[[Float]]] = []
            for try await result in group { all.append(result) }
            return all
        }
        XCTAssertEqual(results.count, 8)
        for result in results { XCTAssertEqual(result, serial) }
    }

    /// A tensor whose bytes do not match its shape is refused before perfopt
    /// reads it (before, a shape larger than the data let perfopt read past
    /// the buffer); so is an example of a negative batch.
    func testTensorsWhoseDataDoesNotMatchTheirShapeAreRefused() throws {
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        let model = try optimizer.load(path: fixture("vocoder.pt"))
        let short = Tensor(floats: [1], shape: [1_000, 80, 32])
        for attempt in [{ _ = try model.run([short]) }, { _ = try model.call([.list([.tensor(short)])]) }] {
            XCTAssertThrowsError(try attempt()) { error in
                let error = error as? PerfOptError
                XCTAssertEqual(error?.status, .invalidArgument)
                XCTAssertTrue(error?.message.contains("holds 4") ?? false, error?.message ?? "")
            }
        }
        XCTAssertThrowsError(try model.run([Tensor(floats: [], shape: [-1])]))
        let spec = InputSpec(name: "mel", dtype: "float32", shape: [-1, 80, 32])
        XCTAssertThrowsError(try spec.example(batch: -1))
        XCTAssertEqual(try spec.example(batch: 2).shape, [2, 80, 32])
        XCTAssertTrue(try model.run([try spec.example(batch: 1)]).allSatisfy(\.isOnHost))
    }

    func testLogLevelsByName() throws {
        let records = Records()
        defer { try? Log.reset() }
        try Log.setHandler(maxLevel: .trace) { level, _ in records.add(level) }
        _ = try Optimizer(device: "cpu", readEnvironment: false)
        XCTAssertGreaterThan(records.count, 0)
        XCTAssertEqual(Log.Level.allCases.map(\.rawValue), [1, 2, 3, 4, 5])
    }

    func testLogHandlersAreReplacedAndReset() throws {
        let first = Records(), second = Records()
        defer { try? Log.reset() }
        try Log.setHandler(maxLevel: 5) { level, _ in first.add(level) }
        var optimizer: Optimizer? = try Optimizer(device: "cpu", readEnvironment: false)
        XCTAssertGreaterThan(first.count, 0)
        try Log.setHandler(maxLevel: 5) { level, _ in second.add(level) }
        let before = first.count
        optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        XCTAssertNotNil(optimizer)
        XCTAssertEqual(first.count, before, "the replaced handler is never called again")
        XCTAssertGreaterThan(second.count, 0)
        XCTAssertThrowsError(try Log.setHandler(maxLevel: 9) { _, _ in }) { error in
            XCTAssertEqual((error as? PerfOptError)?.status, .invalidArgument)
        }
        try Log.reset()
    }
}

/// A scope handed from the thread that entered it to the test's thread.
private final class ScopeBox: @unchecked Sendable {
    let optimizer: Optimizer
    var scope: InferenceScope?

    init(_ optimizer: Optimizer) { self.optimizer = optimizer }
}

/// Log levels a handler saw, from any thread.
private final class Records: @unchecked Sendable {
    private let lock = NSLock()
    private var levels: [Int32] = []

    func add(_ level: Int32) {
        lock.lock()
        levels.append(level)
        lock.unlock()
    }

    var count: Int {
        lock.lock()
        defer { lock.unlock() }
        return levels.count
    }
}

/// max |a - b| / max |b|, as perfopt's relative_error (infinite on a size mismatch).
private func relativeError(_ a: [Float], _ b: [Float]) -> Double {
    guard a.count == b.count else { return .infinity }
    var diff = 0.0
    var scale = 0.0
    for (x, y) in zip(a, b) {
        diff = max(diff, abs(Double(x) - Double(y)))
        scale = max(scale, abs(Double(y)))
    }
    let error = diff / max(scale, Double.leastNormalMagnitude)
    return error.isNaN ? .infinity : error
}

/// A float32, C-order .npy array (numpy formats 1.0 to 3.0), as the fixtures hold.
private struct Npy {
    struct Unreadable: Error {
        let path: String
    }

    let shape: [Int64]
    let floats: [Float]

    var tensor: Tensor { Tensor(floats: floats, shape: shape) }

    init(contentsOf url: URL) throws {
        let bytes = try [UInt8](Data(contentsOf: url))
        let unreadable = Unreadable(path: url.path)
        guard bytes.count >= 12, bytes[0] == 0x93, String(decoding: bytes[1..<6], as: UTF8.self) == "NUMPY" else {
            throw unreadable
        }
        let start = bytes[6] == 1 ? 10 : 12
        var headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
        if bytes[6] != 1 {
            headerLength |= Int(bytes[10]) << 16 | Int(bytes[11]) << 24
        }
        guard bytes.count >= start + headerLength else { throw unreadable }
        let header = String(decoding: bytes[start..<(start + headerLength)], as: UTF8.self)
        guard header.contains("'descr': '<f4'"), header.contains("'fortran_order': False"),
              let open = header.range(of: "'shape': ("),
              let close = header[open.upperBound...].firstIndex(of: ")") else {
            throw unreadable
        }
        shape = header[open.upperBound..<close].split(separator: ",").compactMap {
            Int64($0.trimmingCharacters(in: .whitespaces))
        }
        let count = shape.reduce(1) { $0 * Int($1) }
        let body = start + headerLength
        guard bytes.count >= body + 4 * count else { throw unreadable }
        floats = (0..<count).map { i in
            let o = body + 4 * i
            return Float(bitPattern: UInt32(bytes[o]) | UInt32(bytes[o + 1]) << 8
                | UInt32(bytes[o + 2]) << 16 | UInt32(bytes[o + 3]) << 24)
        }
    }

    /// Index 0 along `dim`, kept as a dimension of size 1.
    func first(along dim: Int) -> Tensor {
        let outer = shape[..<dim].reduce(1) { $0 * Int($1) }
        let inner = shape[(dim + 1)...].reduce(1) { $0 * Int($1) }
        let span = Int(shape[dim]) * inner
        var values: [Float] = []
        for o in 0..<outer {
            values += floats[(o * span)..<(o * span + inner)]
        }
        var sliced = shape
        sliced[dim] = 1
        return Tensor(floats: values, shape: sliced)
    }
}
