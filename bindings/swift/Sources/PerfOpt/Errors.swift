import CPerfOpt

/// perfopt_status codes (include/perfopt.h), as a Swift enum.
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
    case compileSkipped = 20
}

/// A failed perfopt call: the status and perfopt's message with its causes.
public struct PerfOptError: Error, CustomStringConvertible, Sendable {
    public let code: Int32
    public let message: String

    public var status: Status? { Status(rawValue: code) }

    public var description: String {
        let name = String(cString: perfopt_status_name(code))
        return "\(name): \(message)"
    }
}

/// Throws the last error of this thread when `status` is not success.
@inline(__always)
func check(_ status: perfopt_status) throws {
    if status != 0 {
        let message = perfopt_last_error().map { String(cString: $0) } ?? "no message"
        throw PerfOptError(code: status, message: message)
    }
}

/// The library's version, e.g. "perfopt 0.1.0 (libtorch 2.11.0, cuda 13.0)".
public var version: String { String(cString: perfopt_version()) }

/// Fails when the loaded library speaks another ABI than these bindings.
public func checkABI() throws {
    let loaded = perfopt_abi_version()
    if loaded != 2 {
        throw PerfOptError(code: Status.internal.rawValue,
                           message: "libperfopt has ABI \(loaded), these bindings need 2")
    }
}

/// Reads a (buf, len, needed) report, retrying with room when it grew.
func readReport(_ call: (UnsafeMutablePointer<CChar>?, Int, UnsafeMutablePointer<Int>) -> perfopt_status) throws -> String {
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
        return String(cString: buffer)
    }
}
