import CPerfOpt
import Foundation

/// Routes perfopt's log records (1 error ... 5 trace) to a Swift closure.
///
/// Thread safety: `setHandler` and `reset` may be called from any thread at
/// once. perfopt_set_log_callback is a barrier (once it returns, the old
/// callback is never entered again, on any thread), so the old handler is
/// released right after the swap. A lock orders the swaps, so that the
/// handler perfopt holds and the one kept alive here are always the same,
/// whichever thread wins.
///
/// A handler may call perfopt (records its own calls make are dropped) but
/// not `setHandler` or `reset`: those throw `.invalidArgument` from inside a
/// handler, as perfopt refuses it there (waiting for the handlers in flight
/// would wait for itself).
public enum Log {
    private final class Box {
        let handler: (Int32, String) -> Void
        init(_ handler: @escaping (Int32, String) -> Void) { self.handler = handler }
    }

    /// Orders the swaps below; held across perfopt_set_log_callback (which
    /// waits for handlers in flight), never while a handler runs on this thread.
    private static let lock = NSLock()

    /// The handler perfopt calls, kept alive until it is replaced. Guarded by `lock`.
    private static var current: Unmanaged<Box>?

    /// Set in the thread's dictionary while a handler runs on it.
    private static let insideKey: NSString = "PerfOpt.Log.inside"

    private static let callback: perfopt_log_callback = { level, message, userData in
        guard let userData = userData, let message = message else { return }
        let thread = Thread.current.threadDictionary
        thread.setObject(true, forKey: Log.insideKey)
        defer { thread.removeObject(forKey: Log.insideKey) }
        Unmanaged<Box>.fromOpaque(userData).takeUnretainedValue().handler(level, String(cString: message))
    }

    /// Sends records up to `maxLevel` (PERFOPT_LOG_ERROR ... PERFOPT_LOG_TRACE)
    /// to `handler`, from any thread. Replaces the previous handler; once this
    /// returns, the previous one is never called again.
    public static func setHandler(maxLevel: Int32, _ handler: @escaping (Int32, String) -> Void) throws {
        try install(Box(handler), maxLevel: maxLevel)
    }

    /// Back to perfopt's default: stderr, warnings and errors.
    public static func reset() throws {
        try install(nil, maxLevel: 0)
    }

    private static func install(_ box: Box?, maxLevel: Int32) throws {
        if Thread.current.threadDictionary.object(forKey: insideKey) != nil {
            throw PerfOptError(code: Status.invalidArgument.rawValue,
                               message: "Log.setHandler or Log.reset called from inside a log handler: " +
                                   "replace the handler from elsewhere")
        }
        let retained = box.map { Unmanaged.passRetained($0) }
        lock.lock()
        let status = perfopt_set_log_callback(retained == nil ? nil : callback, retained?.toOpaque(), maxLevel)
        let failure = status == Status.ok.rawValue ? nil : lastError(status)
        let old: Unmanaged<Box>?
        if failure == nil {
            old = current
            current = retained
        } else {
            old = retained  // perfopt kept the previous handler: drop the new one
        }
        lock.unlock()
        // Released outside the lock: a handler's captures may run code that logs
        // or replaces the handler when they go.
        old?.release()
        if let failure = failure {
            throw failure
        }
    }
}
