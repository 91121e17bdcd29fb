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
    /// A record's level (PERFOPT_LOG_ERROR ... PERFOPT_LOG_TRACE).
    public enum Level: Int32, Sendable, Comparable, CaseIterable {
        case error = 1, warning, info, debug, trace

        public static func < (lhs: Level, rhs: Level) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    /// What a handler is given: called from whichever thread logged.
    public typealias Handler = @Sendable (_ level: Int32, _ message: String) -> Void

    private final class Box: Sendable {
        let handler: Handler
        init(_ handler: @escaping Handler) { self.handler = handler }
    }

    /// Orders the swaps below; held across perfopt_set_log_callback (which
    /// waits for handlers in flight), never while a handler runs on this thread.
    private static let lock = NSLock()

    /// The handler perfopt calls, kept alive until it is replaced. Only read
    /// and written with `lock` held, which is what makes it safe to share
    /// (`nonisolated(unsafe)` says so to the compiler).
    nonisolated(unsafe) private static var current: Unmanaged<Box>?

    /// Set in the thread's dictionary while a handler runs on it.
    private static let insideKey = "PerfOpt.Log.inside"

    private static let callback: perfopt_log_callback = { level, message, userData in
        guard let userData = userData, let message = message else { return }
        let thread = Thread.current.threadDictionary
        thread[Log.insideKey] = true
        defer { thread.removeObject(forKey: Log.insideKey) }
        Unmanaged<Box>.fromOpaque(userData).takeUnretainedValue().handler(level, String(cString: message))
    }

    /// Sends records up to `maxLevel` (1, PERFOPT_LOG_ERROR, to 5,
    /// PERFOPT_LOG_TRACE; another number throws `.invalidArgument`) to
    /// `handler`, from any thread. Replaces the previous handler; once this
    /// returns, the previous one is never called again.
    public static func setHandler(maxLevel: Int32, _ handler: @escaping Handler) throws(PerfOptError) {
        try install(Box(handler), maxLevel: maxLevel)
    }

    /// `setHandler(maxLevel:_:)` with the level as a `Level`.
    public static func setHandler(maxLevel: Level, _ handler: @escaping Handler) throws(PerfOptError) {
        try install(Box(handler), maxLevel: maxLevel.rawValue)
    }

    /// Back to perfopt's default: stderr, warnings and errors.
    public static func reset() throws(PerfOptError) {
        try install(nil, maxLevel: 0)
    }

    private static func install(_ box: Box?, maxLevel: Int32) throws(PerfOptError) {
        if Thread.current.threadDictionary[insideKey] != nil {
            throw PerfOptError(.invalidArgument,
                               "Log.setHandler or Log.reset called from inside a log handler: " +
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
