import Foundation
import XCTest
@testable import PerfOpt

/// Each test's sequence of C calls is replayed by tests/cpp/swift_mirror.c
/// against the real library, since no Swift toolchain reaches CI.
final class PerfOptTests: XCTestCase {
    private var fixtures: URL {
        URL(fileURLWithPath: ProcessInfo.processInfo.environment["PERFOPT_FIXTURES"] ?? "build/fixtures")
    }

    func testVersionAndABI() throws {
        try checkABI()
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

    func testUnknownDeviceThrows() {
        XCTAssertThrowsError(try Optimizer(device: "tpu", readEnvironment: false)) { error in
            let error = error as? PerfOptError
            XCTAssertEqual(error?.status, .invalidArgument)
            XCTAssertTrue(error?.message.contains("tpu") ?? false)
        }
    }

    func testInferenceScopeNests() throws {
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        let value = try optimizer.withInferenceScope {
            try optimizer.withInferenceScope { 42 }
        }
        XCTAssertEqual(value, 42)
    }

    func testVocoderRunsAndReports() throws {
        let optimizer = try Optimizer(device: "cpu", readEnvironment: false)
        let model = try optimizer.load(path: fixtures.appendingPathComponent("vocoder.pt").path, name: "vocoder")
        let mel = Tensor(floats: [Float](repeating: 0.1, count: 2 * 80 * 32), shape: [2, 80, 32])
        try model.compile(mode: "default", warmup: [mel])
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
}
