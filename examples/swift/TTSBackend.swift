// The service's TTS backend in Swift (a macOS/iOS app's synthesis path):
// initialise the optimizer, load and compile the vocoder with a warm-up
// input, then synthesise inside an inference scope.
//
// Not compiled here (no Swift toolchain reaches these machines); parsed by
// tests/swift/check_swift.py, and its C calls are those of PerfOptTests.
import Foundation
import PerfOpt

func synthesize(modelsDirectory: URL) throws -> [Float] {
    let optimizer = try Optimizer()  // device and settings from TRANSLATOR_* and defaults
    let vocoder = try optimizer.load(path: modelsDirectory.appendingPathComponent("vocoder.pt").path, name: "vocoder")
    let batch = try optimizer.optimalBatchSize()
    let silence = Tensor(floats: [Float](repeating: 0, count: batch * 80 * 32), shape: [Int64(batch), 80, 32])
    if let note = try vocoder.compile(warmup: [silence]) {
        print("compile skipped: \(note)")  // MPS: not a failure, the model runs as loaded
    }
    let warm = try vocoder.warmup([silence])
    print("warm-up: first call \(warm.firstCallMs) ms, steady \(warm.steady?.p50Ms ?? 0) ms")
    let mel = Tensor(floats: (0..<(batch * 80 * 32)).map { Float($0 % 80) / 80 }, shape: [Int64(batch), 80, 32])
    let audio = try optimizer.withInferenceScope { try vocoder.run([mel]) }
    return audio.first?.floats ?? []
}

let models = URL(fileURLWithPath: CommandLine.arguments.dropFirst().first ?? "build/fixtures")
let samples = try synthesize(modelsDirectory: models)
print("synthesised \(samples.count) samples")
