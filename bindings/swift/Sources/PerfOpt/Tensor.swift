import CPerfOpt
import Foundation

/// An input tensor in host memory: float32 values or raw bytes of a dtype.
public struct Tensor: Sendable {
    public enum DType: Sendable {
        case float32, int64, uint8

        var dl: DLDataType {
            switch self {
            case .float32: return DLDataType(code: UInt8(kDLFloat.rawValue), bits: 32, lanes: 1)
            case .int64: return DLDataType(code: UInt8(kDLInt.rawValue), bits: 64, lanes: 1)
            case .uint8: return DLDataType(code: UInt8(kDLUInt.rawValue), bits: 8, lanes: 1)
            }
        }
    }

    public let shape: [Int64]
    public let dtype: DType
    /// The values, C order, little-endian.
    public let data: Data

    public init(floats: [Float], shape: [Int64]) {
        self.shape = shape
        self.dtype = .float32
        self.data = floats.withUnsafeBufferPointer { Data(buffer: $0) }
    }

    public init(data: Data, dtype: DType, shape: [Int64]) {
        self.shape = shape
        self.dtype = dtype
        self.data = data
    }

    /// Bytes one element takes.
    var elementSize: Int {
        switch dtype {
        case .float32: return 4
        case .int64: return 8
        case .uint8: return 1
        }
    }

    /// Throws unless the shape is valid and `data` holds exactly the bytes it
    /// describes: perfopt reads that many bytes, and a shape larger than the
    /// data would have it read past the buffer.
    func checkSize(_ what: String) throws(PerfOptError) {
        var elements = 1
        for dimension in shape {
            guard dimension >= 0 else {
                throw PerfOptError(.invalidArgument, "\(what): shape \(shape) has a negative size")
            }
            let (product, overflow) = elements.multipliedReportingOverflow(by: Int(dimension))
            guard !overflow else {
                throw PerfOptError(.invalidArgument, "\(what): shape \(shape) is too large")
            }
            elements = product
        }
        let (bytes, overflow) = elements.multipliedReportingOverflow(by: elementSize)
        guard !overflow, bytes == data.count else {
            throw PerfOptError(.invalidArgument,
                               "\(what): shape \(shape) of \(dtype) needs \(overflow ? "too many" : "\(bytes)") " +
                                   "bytes, and the tensor holds \(data.count)")
        }
    }
}

/// Throws unless every tensor holds the bytes its shape describes.
func checkSizes(_ tensors: [Tensor]) throws(PerfOptError) {
    for (i, tensor) in tensors.enumerated() {
        try tensor.checkSize("input \(i)")
    }
}

/// Describes `tensors` as DLTensors for one call. Shapes and bytes are copied
/// into buffers that stay put for the call (Swift arrays may move), then freed.
func withDLTensors<R>(_ tensors: [Tensor], _ body: (UnsafePointer<DLTensor>?, Int) throws -> R) rethrows -> R {
    let arena = CallArena()
    defer { arena.release() }
    let described = tensors.map { arena.describe($0) }
    return try described.withUnsafeBufferPointer { try body($0.baseAddress, $0.count) }
}

/// Memory that must stay put for one C call (tensor bytes and shapes, strings,
/// item arrays), freed together by `release()` once the call returned. Call
/// `release()` from a `defer` in the function that made the call: that also
/// keeps the arena alive until then.
final class CallArena {
    private var frees: [() -> Void] = []

    /// Room for `count` values of `T` (at least one), uninitialized.
    func allocate<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let pointer = UnsafeMutablePointer<T>.allocate(capacity: max(count, 1))
        frees.append { pointer.deallocate() }
        return pointer
    }

    /// A DLTensor over copies of the tensor's shape and bytes (host memory).
    func describe(_ tensor: Tensor) -> DLTensor {
        let shape = allocate(Int64.self, count: tensor.shape.count)
        shape.initialize(from: tensor.shape, count: tensor.shape.count)
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: max(tensor.data.count, 1), alignment: 64)
        frees.append { bytes.deallocate() }
        tensor.data.copyBytes(to: bytes.assumingMemoryBound(to: UInt8.self), count: tensor.data.count)
        return DLTensor(data: bytes, device: DLDevice(device_type: kDLCPU, device_id: 0),
                        ndim: Int32(tensor.shape.count), dtype: tensor.dtype.dl,
                        shape: shape, strides: nil, byte_offset: 0)
    }

    func release() {
        frees.forEach { $0() }
        frees.removeAll()
    }
}

/// An output tensor perfopt returned (a run's output, or a tensor taken out of
/// a call's result); it owns the DLManagedTensor and frees it through its
/// DLPack deleter.
///
/// `Sendable`: nothing changes an output after perfopt made it, so it may be
/// read from any thread; it is freed once, when the last reference goes.
public final class Output: @unchecked Sendable {
    private let managed: UnsafeMutablePointer<DLManagedTensor>

    init(_ managed: UnsafeMutablePointer<DLManagedTensor>) {
        self.managed = managed
    }

    deinit {
        managed.pointee.deleter?(managed)
    }

    public var shape: [Int64] {
        let t = managed.pointee.dl_tensor
        return (0..<Int(t.ndim)).map { t.shape[$0] }
    }

    public var count: Int { shape.reduce(1) { $0 * Int($1) } }

    /// Whether the values are in host memory, readable here (`floats`,
    /// `data`); false for an output kept on a GPU (`outputsOnDevice`).
    public var isOnHost: Bool {
        let device = managed.pointee.dl_tensor.device.device_type
        return device == kDLCPU || device == kDLCUDAHost
    }

    /// The values of a float32 output in host memory (perfopt's outputs are
    /// contiguous); empty for another dtype or an output on a GPU.
    public var floats: [Float] {
        let t = managed.pointee.dl_tensor
        guard isOnHost, t.dtype.code == UInt8(kDLFloat.rawValue), t.dtype.bits == 32, t.dtype.lanes == 1,
              let base = t.data else { return [] }
        let start = base.advanced(by: Int(t.byte_offset)).assumingMemoryBound(to: Float.self)
        return Array(UnsafeBufferPointer(start: start, count: count))
    }

    /// The raw bytes of an output in host memory; empty for one on a GPU.
    public var data: Data {
        let t = managed.pointee.dl_tensor
        guard isOnHost, let base = t.data else { return Data() }
        return Data(bytes: base.advanced(by: Int(t.byte_offset)),
                    count: count * Int(t.dtype.bits / 8) * Int(max(t.dtype.lanes, 1)))
    }
}
