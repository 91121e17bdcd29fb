// swift-tools-version:6.0
// The service's TTS backend example in Swift, built against the PerfOpt package
// of this checkout (`make test-swift` builds and runs them on the fixtures).
import PackageDescription

let package = Package(
    name: "PerfOptExamples",
    platforms: [.macOS(.v13), .iOS(.v16)],
    dependencies: [
        .package(path: "../../../bindings/swift"),
    ],
    targets: [
        .executableTarget(
            name: "TTSBackend",
            dependencies: [.product(name: "PerfOpt", package: "swift")],
            path: "Sources/TTSBackend"
        ),
    ],
    swiftLanguageModes: [.v6]
)
