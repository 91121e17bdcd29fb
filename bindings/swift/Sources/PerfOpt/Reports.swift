import Foundation

/// perfopt_optimizer_report, decoded (the fields apps use; the JSON has more).
public struct OptimizerReport: Codable, Sendable {
    public struct Device: Codable, Sendable {
        public let kind: String
        public let index: Int?
        public let name: String
        public let totalMemoryBytes: Int64?
        public let freeMemoryBytes: Int64?
        public let computeCapability: String?
    }
    public struct Threads: Codable, Sendable {
        public let cores: Int
        public let intraOp: Int?
        public let interOp: Int?
    }
    public struct Skipped: Codable, Sendable {
        public let setting: String
        public let reason: String
    }
    public struct BatchSize: Codable, Sendable {
        public let serviceRule: Int
    }
    public let perfoptVersion: String
    public let libtorchVersion: String
    public let device: Device
    public let threads: Threads
    public let skipped: [Skipped]
    public let batchSize: BatchSize
}

/// perfopt_model_warmup's report.
public struct WarmupReport: Codable, Sendable {
    public struct Steady: Codable, Sendable {
        public let samples: Int
        public let p50Ms: Double
        public let p90Ms: Double
        public let p99Ms: Double
    }
    public let iterations: Int
    public let firstCallMs: Double
    public let steady: Steady?
    public let success: Bool
}

/// perfopt_model_report, decoded.
public struct ModelReport: Codable, Sendable {
    public struct Latency: Codable, Sendable {
        public let samples: Int
        public let p50Ms: Double
        public let p99Ms: Double
    }
    public struct Compile: Codable, Sendable {
        public let requestedMode: String
        public let executor: String
        public let chosen: String
        public let why: String
    }
    /// A bundle's forms (perfopt.export's NAME.perfopt folder): each form's
    /// format, the one loaded first, and notes on forms left out.
    public struct Forms: Codable, Sendable {
        public let forms: [String]
        public let loaded: String
        public let notes: [String]
    }
    public let name: String
    /// "torchscript", "aotinductor" or "onnx": the format of the form that
    /// runs now (a bundle's chosen form).
    public let format: String
    /// nil for a model file.
    public let bundle: Forms?
    public let device: String
    public let calls: Int
    public let failedCalls: Int
    public let latency: Latency?
    public let peakMemoryBytes: Int64?
    public let compile: Compile
}

/// perfopt_model_recommend_batch's report.
public struct BatchRecommendation: Codable, Sendable {
    public let recommendedBatch: Int
    public let reason: String
    public let memoryLimitBatch: Int?
    public let throughputKneeBatch: Int?
}

/// One method of a model (perfopt_model_methods): its TorchScript schema,
/// arguments (without `self`) and return types.
public struct MethodInfo: Codable, Sendable {
    public struct Argument: Codable, Sendable {
        public let name: String
        /// The TorchScript type, e.g. "Tensor", "int", "Optional[Tensor]".
        public let typeName: String
        /// The default's TorchScript spelling; nil when the argument is required.
        public let defaultValue: String?

        enum CodingKeys: String, CodingKey {
            case name
            case typeName = "type"
            case defaultValue = "default"
        }
    }
    public let name: String
    public let schema: String
    public let arguments: [Argument]
    public let returns: [String]
}

/// Decodes a report perfopt wrote; a report that does not decode (a library
/// newer than these bindings that dropped a field) is `.internal`, naming
/// what failed.
func decode<T: Decodable>(_ type: T.Type, from json: String) throws(PerfOptError) -> T {
    let decoder = JSONDecoder()
    decoder.keyDecodingStrategy = .convertFromSnakeCase
    do {
        return try decoder.decode(type, from: Data(json.utf8))
    } catch {
        throw PerfOptError(.internal, "perfopt's report did not decode as \(T.self): \(error)")
    }
}
