import CPerfOpt

/// perfopt_status codes (include/perfopt.h), as a Swift enum.
///
/// Raw values must be literals, so they are written out here (and the header's
/// `enum perfopt_status` shares its name with the `int32_t` typedef functions
/// return before C23, so Swift has no clean way to name the C constants).
/// tests/swift/check_swift.py fails when these cases and the header differ.
public enum Status: Int32, Sendable {
    case ok = 0
    case nullArgument = 1
    case invalidArgument = 2
    case invalidUTF8 = 3
    case structSize = 4
    case invalidHandle = 5
    case environment = 6
    case fileNotFound = 7
    case loadFailed = 8
    case unsupportedDevice = 9
    case deviceNotFound = 10
    case device = 11
    case outOfMemory = 12
    case wrongThread = 13
    case scopeOrder = 14
    case bufferTooSmall = 15
    case torch = 16
    case panic = 17
    case `internal` = 18
    case modelCorrupt = 19
    /// Not a failure: `Model.compile` returns its note instead of throwing.
    case compileSkipped = 20
    /// The model path is a named pipe, a socket, a device, or a folder that is not a bundle.
    case notAFile = 21
    /// A valid model file perfopt cannot run as it is (a cpp-only AOTInductor package).
    case unsupportedModel = 22
    /// This process was forked after perfopt ran a model: make perfopt objects
    /// after the fork, or spawn workers instead.
    case forkedChild = 23
}

/// What perfopt's functions return: the `int32_t` perfopt_status typedef
/// (spelled here as Int32, which it is in every C mode Swift imports with).
typealias StatusCode = Int32

/// A failed perfopt call: its status and perfopt's message with its causes.
///
/// Every throwing call of this package throws only this type
/// (`throws(PerfOptError)`), so a `catch` has the status without a cast:
///
/// ```swift
/// do {
///     _ = try optimizer.load(path: "missing.pt")
/// } catch {
///     print(error.status, error.message)  // fileNotFound, "...: no such file"
/// }
/// ```
public struct PerfOptError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The raw `perfopt_status` the library returned.
    public let code: Int32
    /// perfopt's message for this failure, with its cause chain.
    public let message: String

    public init(code: Int32, message: String) {
        self.code = code
        self.message = message
    }

    /// An error of perfopt's kinds, for code that wraps these calls and
    /// reports its own failures the same way.
    public init(_ status: Status, _ message: String) {
        self.init(code: status.rawValue, message: message)
    }

    /// The status as a Swift case; `.internal` for a code these bindings do
    /// not know (the ABI check at `Optimizer.init` makes that a library bug).
    public var status: Status { Status(rawValue: code) ?? .internal }

    /// The status's name, e.g. "PERFOPT_ERR_INVALID_ARGUMENT" (perfopt_status_name).
    public var name: String { String(cString: perfopt_status_name(code)) }

    /// What the status means, in a sentence (perfopt_status_message).
    public var summary: String { String(cString: perfopt_status_message(code)) }

    public var description: String { "\(name): \(message)" }
}

/// Throws the last error of this thread when `status` is not success. When
/// perfopt left no message (it always does after a failure), the status's
/// own sentence stands in.
@inline(__always)
func check(_ status: StatusCode) throws(PerfOptError) {
    if status != Status.ok.rawValue {
        throw lastError(status)
    }
}

/// The error for `status`, with this thread's last message (read it before
/// any other perfopt call on the thread).
func lastError(_ status: StatusCode) -> PerfOptError {
    let message = perfopt_last_error().map { String(cString: $0) }
        ?? String(cString: perfopt_status_message(status))
    return PerfOptError(code: status, message: message)
}

/// The loaded library's version, e.g. "perfopt 0.1.0 (libtorch 2.11.0, cuda 13.0)".
public var version: String { String(cString: perfopt_version()) }

/// The ABI these bindings speak (PERFOPT_ABI_VERSION of the header they were written for).
public let abiVersion: UInt32 = 6

/// Fails when the loaded library speaks another ABI than these bindings.
public func checkABI() throws(PerfOptError) {
    let loaded = perfopt_abi_version()
    if loaded != abiVersion {
        throw PerfOptError(.internal, "libperfopt has ABI \(loaded), these bindings need \(abiVersion)")
    }
}

/// C's `sizeof(T)` for a struct of the header: Swift's stride (the size
/// rounded up to the alignment), which counts the tail padding C counts.
/// `MemoryLayout<T>.size` may leave that padding out (perfopt_config: 52 bytes
/// against C's 56), and perfopt refuses a struct_size it does not know.
@inline(__always)
func cSize<T>(of type: T.Type) -> Int { MemoryLayout<T>.stride }

/// Reads a (buf, len, needed) report, retrying with room when it grew. Only
/// for calls that do no work beyond writing the text (a report, a kept one):
/// the call may be made twice.
func readReport(
    _ call: (UnsafeMutablePointer<CChar>?, Int, UnsafeMutablePointer<Int>) -> StatusCode
) throws(PerfOptError) -> String {
    var size = 4096
    while true {
        var buffer = [CChar](repeating: 0, count: size)
        var needed = 0
        let status = buffer.withUnsafeMutableBufferPointer { call($0.baseAddress, size, &needed) }
        if status == Status.bufferTooSmall.rawValue && needed > size {
            size = needed * 2
            continue
        }
        try check(status)
        return text(of: buffer)
    }
}

/// The text before the first NUL of a buffer perfopt wrote.
func text(of buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
