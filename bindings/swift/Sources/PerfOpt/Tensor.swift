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
}

/// Describes `tensors` as DLTensors for one call. Shapes and bytes are copied
/// into buffers that stay put for the call (Swift arrays may move), then freed.
func withDLTensors<R>(_ tensors: [Tensor], _ body: (UnsafePointer<DLTensor>?, Int) throws -> R) rethrows -> R {
    var allocations: [UnsafeMutableRawPointer] = []
    defer { allocations.forEach { $0.deallocate() } }
    var described: [DLTensor] = []
    described.reserveCapacity(tensors.count)
    for tensor in tensors {
        let shape = UnsafeMutablePointer<Int64>.allocate(capacity: max(tensor.shape.count, 1))
        shape.initialize(from: tensor.shape, count: tensor.shape.count)
        allocations.append(UnsafeMutableRawPointer(shape))
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: max(tensor.data.count, 1), alignment: 64)
        tensor.data.copyBytes(to: bytes.assumingMemoryBound(to: UInt8.self), count: tensor.data.count)
        allocations.append(bytes)
        described.append(DLTensor(data: bytes, device: DLDevice(device_type: kDLCPU, device_id: 0),
                                  ndim: Int32(tensor.shape.count), dtype: tensor.dtype.dl,
                                  shape: shape, strides: nil, byte_offset: 0))
    }
    return try described.withUnsafeBufferPointer { try body($0.baseAddress, $0.count) }
}

/// An output tensor perfopt returned; freed through its DLPack deleter.
public final class Output {
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

    /// The values of a float32 output (host memory, contiguous).
    public var floats: [Float] {
        let t = managed.pointee.dl_tensor
        guard t.dtype.code == UInt8(kDLFloat.rawValue), t.dtype.bits == 32, let base = t.data else { return [] }
        let start = base.advanced(by: Int(t.byte_offset)).assumingMemoryBound(to: Float.self)
        return Array(UnsafeBufferPointer(start: start, count: count))
    }

    /// The raw bytes.
    public var data: Data {
        let t = managed.pointee.dl_tensor
        guard let base = t.data else { return Data() }
        return Data(bytes: base.advanced(by: Int(t.byte_offset)), count: count * Int(t.dtype.bits / 8))
    }
}
