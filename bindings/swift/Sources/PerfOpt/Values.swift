import CPerfOpt
import Foundation

/// An argument of any TorchScript kind (perfopt_value), for `Model.call` and
/// the `args:` forms of compile, warm-up and batching. perfopt converts each to
/// the type the method's schema wants (an int where a float is wanted, a list
/// where a tuple is); `.none` fills an `Optional`.
public enum Value: Sendable {
    case none
    case tensor(Tensor)
    case int(Int64)
    case double(Double)
    case bool(Bool)
    case string(String)
    case list([Value])
    case tuple([Value])
}

/// A result of `Model.call`, as the method returned it. Tensors are `Output`s
/// that own their memory; the rest are plain values.
public enum ResultValue: Sendable {
    case none
    case tensor(Output)
    case int(Int64)
    case double(Double)
    case bool(Bool)
    case string(String)
    case list([ResultValue])
    case tuple([ResultValue])

    public var isNone: Bool { if case .none = self { return true } else { return false } }
    public var tensorValue: Output? { if case .tensor(let t) = self { return t } else { return nil } }
    public var intValue: Int64? { if case .int(let i) = self { return i } else { return nil } }
    public var doubleValue: Double? { if case .double(let d) = self { return d } else { return nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }

    /// The items of a list or a tuple.
    public var items: [ResultValue]? {
        switch self {
        case .list(let items), .tuple(let items): return items
        default: return nil
        }
    }

    /// Every tensor of the result, depth first (a tuple of tensors as `run` gives them).
    public var tensors: [Output] {
        switch self {
        case .tensor(let t): return [t]
        case .list(let items), .tuple(let items): return items.flatMap { $0.tensors }
        default: return []
        }
    }
}

extension CallArena {
    /// `values` as a perfopt_value array that stays put for the call: nested
    /// item arrays, string bytes and tensors (with their shapes and bytes)
    /// live in the arena.
    func values(_ values: [Value]) -> UnsafeMutablePointer<perfopt_value> {
        let array = allocate(perfopt_value.self, count: values.count)
        for (i, value) in values.enumerated() {
            (array + i).initialize(to: describe(value))
        }
        return array
    }

    func describe(_ value: Value) -> perfopt_value {
        var v = perfopt_value()
        v.struct_size = UInt32(cSize(of: perfopt_value.self))
        switch value {
        case .none:
            v.kind = PERFOPT_VALUE_NONE
        case .tensor(let tensor):
            v.kind = PERFOPT_VALUE_TENSOR
            let described = allocate(DLTensor.self, count: 1)
            described.initialize(to: describe(tensor))
            v.tensor = UnsafePointer(described)
        case .int(let i):
            v.kind = PERFOPT_VALUE_INT
            v.int_value = i
        case .double(let d):
            v.kind = PERFOPT_VALUE_DOUBLE
            v.double_value = d
        case .bool(let b):
            v.kind = PERFOPT_VALUE_BOOL
            v.int_value = b ? 1 : 0
        case .string(let s):
            v.kind = PERFOPT_VALUE_STRING
            let bytes = Array(s.utf8)
            let copy = allocate(CChar.self, count: bytes.count)
            for (i, byte) in bytes.enumerated() {
                (copy + i).initialize(to: CChar(bitPattern: byte))
            }
            v.string = UnsafePointer(copy)
            v.length = bytes.count
        case .list(let items):
            v.kind = PERFOPT_VALUE_LIST
            v.items = self.values(items)
            v.length = items.count
        case .tuple(let items):
            v.kind = PERFOPT_VALUE_TUPLE
            v.items = self.values(items)
            v.length = items.count
        }
        return v
    }
}

/// Throws unless every tensor among `values` holds the bytes its shape describes.
func checkSizes(_ values: [Value]) throws(PerfOptError) {
    func walk(_ value: Value, _ path: String) throws(PerfOptError) {
        switch value {
        case .tensor(let tensor):
            try tensor.checkSize(path)
        case .list(let items), .tuple(let items):
            for (i, item) in items.enumerated() {
                try walk(item, "\(path)[\(i)]")
            }
        default:
            break
        }
    }
    for (i, value) in values.enumerated() {
        try walk(value, "argument \(i)")
    }
}

/// `values` as perfopt_values for one call (NULL and 0 when there are none).
func withValues<R>(_ values: [Value], _ body: (UnsafePointer<perfopt_value>?, Int) throws(PerfOptError) -> R) rethrows -> R {
    let arena = CallArena()
    defer { arena.release() }
    if values.isEmpty {
        return try body(nil, 0)
    }
    return try body(UnsafePointer(arena.values(values)), values.count)
}

/// Converts a result tree of perfopt_model_call, taking its tensors: each
/// `managed` is set to NULL so that perfopt_value_free leaves it to the Output.
/// Frees the tree (perfopt_value_free) in every case.
func takeResult(_ root: UnsafeMutablePointer<perfopt_value>) throws(PerfOptError) -> ResultValue {
    defer { perfopt_value_free(root) }
    return try take(root)
}

private func take(_ node: UnsafeMutablePointer<perfopt_value>) throws(PerfOptError) -> ResultValue {
    let v = node.pointee
    switch v.kind {
    case PERFOPT_VALUE_NONE:
        return .none
    case PERFOPT_VALUE_TENSOR:
        guard let managed = v.managed else {
            throw PerfOptError(code: Status.internal.rawValue, message: "a tensor result without its DLManagedTensor")
        }
        node.pointee.managed = nil
        return .tensor(Output(managed))
    case PERFOPT_VALUE_INT:
        return .int(v.int_value)
    case PERFOPT_VALUE_DOUBLE:
        return .double(v.double_value)
    case PERFOPT_VALUE_BOOL:
        return .bool(v.int_value != 0)
    case PERFOPT_VALUE_STRING:
        guard let string = v.string, v.length > 0 else { return .string("") }
        return .string(String(decoding: UnsafeRawBufferPointer(start: string, count: v.length), as: UTF8.self))
    case PERFOPT_VALUE_LIST, PERFOPT_VALUE_TUPLE:
        var items: [ResultValue] = []
        items.reserveCapacity(v.length)
        if let base = v.items {
            for i in 0..<v.length {
                items.append(try take(base + i))
            }
        }
        return v.kind == PERFOPT_VALUE_LIST ? .list(items) : .tuple(items)
    default:
        throw PerfOptError(code: Status.internal.rawValue, message: "a result of kind \(v.kind), unknown to these bindings")
    }
}
