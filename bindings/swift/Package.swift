// swift-tools-version:6.0
// PerfOpt: Swift bindings for libperfopt (macOS, iOS, Linux).
//
// CPerfOpt is a system-library target over the installed C header: build and
// install perfopt first (`make install PREFIX=...`, which writes perfopt.pc),
// and put its lib/pkgconfig on PKG_CONFIG_PATH. On iOS, link the static
// libperfopt.a built for the device into the app instead.
import PackageDescription

let package = Package(
    name: "PerfOpt",
    platforms: [.macOS(.v13), .iOS(.v16)],
    products: [
        .library(name: "PerfOpt", targets: ["PerfOpt"]),
    ],
    targets: [
        .systemLibrary(
            name: "CPerfOpt",
            path: "Sources/CPerfOpt",
            pkgConfig: "perfopt",
            providers: []
        ),
        .target(
            name: "PerfOpt",
            dependencies: ["CPerfOpt"],
            path: "Sources/PerfOpt"
        ),
        .testTarget(
            name: "PerfOptTests",
            dependencies: ["PerfOpt"],
            path: "Tests/PerfOptTests"
        ),
    ],
    // Swift 6 language mode: strict concurrency checking is on, and the
    // package compiles without a diagnostic in it.
    swiftLanguageModes: [.v6]
)
