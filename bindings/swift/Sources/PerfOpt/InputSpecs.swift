import Foundation

/// One input of a model as its maker recorded it (`NAME.inputs.json` beside
/// the model file, written by `perfopt.export` and by the fixtures): a name,
/// a dtype and a shape in which -1 marks a dimension of any size (the batch).
public struct InputSpec: Codable, Sendable, Equatable {
    public let name: String
    /// "float32", "int64" or "uint8" (the dtypes `Tensor` carries).
    public let dtype: String
    public let shape: [Int64]

    public init(name: String, dtype: String, shape: [Int64]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }

    /// The specs recorded beside the model at `path` (`vocoder.pt` ->
    /// `vocoder.inputs.json`; a bundle folder keeps them inside,
    /// `vad.perfopt/inputs.json`); nil when there is no such file. A file
    /// that does not decode throws `.invalidArgument` naming it.
    public static func recorded(besideModelAt path: String) throws(PerfOptError) -> [InputSpec]? {
        let model = URL(fileURLWithPath: path)
        var isFolder: ObjCBool = false
        let bundle = FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) && isFolder.boolValue
        let specs = bundle
            ? model.appendingPathComponent("inputs.json")
            : model.deletingPathExtension().appendingPathExtension("inputs.json")
        guard let data = try? Data(contentsOf: specs) else { return nil }
        do {
            return try JSONDecoder().decode([InputSpec].self, from: data)
        } catch {
            throw PerfOptError(.invalidArgument, "\(specs.path): not a list of input specs: \(error)")
        }
    }

    /// A tensor of this input's shape, -1 dimensions set to `batch`, every
    /// value `fill(i)` for element i (as a float32, int64 or uint8).
    public func example(batch: Int64, fill: (Int) -> Double = { _ in 0 }) throws(PerfOptError) -> Tensor {
        guard batch >= 0 else {
            throw PerfOptError(.invalidArgument, "input \(name): batch \(batch) is negative")
        }
        let dims = shape.map { $0 < 0 ? batch : $0 }
        var count = 1
        for dimension in dims {
            let (product, overflow) = count.multipliedReportingOverflow(by: Int(dimension))
            guard !overflow, product <= 1 << 32 else {
                throw PerfOptError(.invalidArgument, "input \(name): shape \(dims) is too large for an example")
            }
            count = product
        }
        switch dtype {
        case "float32":
            return Tensor(floats: (0..<count).map { Float(fill($0)) }, shape: dims)
        case "int64":
            let values = (0..<count).map { Int64(fill($0)) }
            return Tensor(data: values.withUnsafeBufferPointer { Data(buffer: $0) }, dtype: .int64, shape: dims)
        case "uint8":
            return Tensor(data: Data((0..<count).map { UInt8(clamping: Int(fill($0))) }), dtype: .uint8, shape: dims)
        default:
            throw PerfOptError(.invalidArgument, "input \(name): dtype \(dtype) has no Swift Tensor form here")
        }
    }
}
