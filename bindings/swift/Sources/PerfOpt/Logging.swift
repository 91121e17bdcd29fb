import CPerfOpt

/// Routes perfopt's log records (1 error ... 5 trace) to a Swift closure.
public enum Log {
    private final class Box {
        let handler: (Int32, String) -> Void
        init(_ handler: @escaping (Int32, String) -> Void) { self.handler = handler }
    }

    /// Kept alive here: perfopt calls it from any thread until replaced.
    private static var current: Unmanaged<Box>?

    public static func setHandler(maxLevel: Int32, _ handler: @escaping (Int32, String) -> Void) throws {
        let box = Unmanaged.passRetained(Box(handler))
        let callback: perfopt_log_callback = { level, message, userData in
            guard let userData = userData, let message = message else { return }
            Unmanaged<Box>.fromOpaque(userData).takeUnretainedValue().handler(level, String(cString: message))
        }
        try check(perfopt_set_log_callback(callback, box.toOpaque(), maxLevel))
        current?.release()
        current = box
    }

    /// Back to perfopt's default: stderr, warnings and errors.
    public static func reset() throws {
        try check(perfopt_set_log_callback(nil, nil, 0))
        current?.release()
        current = nil
    }
}
