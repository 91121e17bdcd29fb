// The service's TTS backend in Swift (a macOS/iOS app's synthesis path):
// initialise the optimizer, load and compile the vocoder with a warm-up
// input, then synthesise inside an inference scope. The input's shape comes
// from the model (NAME.inputs.json beside it), so a 100-bin vocoder works as
// an 80-bin one does.
//
//     swift run --package-path examples/swift TTSBackend MODELS_DIR [VOCODER]
//
// The README's Swift section is the part between the README markers, word
// for word (tests/swift/check_swift.py checks it), so the code shown there is
// the code `make test-swift` compiled and ran.
import Foundation
import PerfOpt

// README: begin
func synthesize(vocoderAt path: String) throws -> Output {
    guard let spec = try InputSpec.recorded(besideModelAt: path)?.first else {
        throw PerfOptError(.invalidArgument, "\(path): no NAME.inputs.json beside it")
    }
    let optimizer = try Optimizer()  // device, TF32, threads: arguments, then TRANSLATOR_*
    let vocoder = try optimizer.load(path: path, name: "vocoder")
    let batch = Int64(try optimizer.optimalBatchSize())
    let silence = try spec.example(batch: batch)
    if let note = try vocoder.compile(warmup: [silence]) {
        print("compile skipped: \(note)")  // MPS: not a failure, the model runs as loaded
    }
    let warm = try vocoder.warmup([silence], iterations: 3)
    print("warm-up: first call \(warm.firstCallMs) ms, then \(warm.steady?.p50Ms ?? 0) ms")
    let mel = try spec.example(batch: batch) { Double($0 % 80) / 80 }
    let audio = try optimizer.withInferenceScope { try vocoder.run([mel]) }
    guard let waveform = audio.first else {
        throw PerfOptError(.internal, "the vocoder returned no output")
    }
    return waveform
}

// README: end

let arguments = Array(CommandLine.arguments.dropFirst())
let models = arguments.first ?? "build/fixtures"
let file = arguments.count > 1 ? arguments[1] : "vocoder.pt"
do {
    let waveform = try synthesize(vocoderAt: URL(fileURLWithPath: models).appendingPathComponent(file).path)
    print("synthesised \(waveform.shape[0]) waveform(s) of \(waveform.shape.last ?? 0) samples")
} catch let error as PerfOptError {
    print("perfopt failed: \(error.name): \(error.message)")  // the status and perfopt's message
    exit(1)
}
