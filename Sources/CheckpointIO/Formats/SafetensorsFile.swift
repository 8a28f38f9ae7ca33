import BlobCodec
import Foundation

/// A safetensors file (Hugging Face's format): read with the reference
/// implementation's validation rules, written byte for byte as its Python
/// `save_file` writes.
///
/// Layout: an 8-byte little-endian header length `N`, `N` bytes of JSON
/// (`{"__metadata__": {…}, "NAME": {"dtype": "F32", "shape": […],
/// "data_offsets": [BEGIN, END]}, …}`, padded with spaces), then the tensor
/// bytes; offsets are relative to the end of the header.
///
/// Safetensors has **no checksums**: damage to tensor bytes goes undetected.
/// Use it for interchange, and the container format for checkpoints you
/// need to trust.
///
/// Reading checks, in order: at least 8 bytes; `N` ≤ ``maximumHeaderLength``
/// and `8 + N` within the file; the header is UTF-8 JSON (whitespace may come
/// before and after it), an object, without
/// duplicate names (stricter than the reference, which keeps the last one);
/// every dtype known and every shape's byte count
/// free of overflow; sorted by offset, each tensor starts where the previous
/// one ended and spans exactly its byte count; the last one ends at the end
/// of the file.
public final class SafetensorsFile: @unchecked Sendable {
    /// One tensor's header entry.
    public struct Entry: Sendable, Hashable {
        /// The tensor's name.
        public var name: String
        /// The element type.
        public var dtype: DType
        /// The dimensions, outermost first.
        public var shape: Shape
        /// Byte range relative to the start of the data section.
        public var dataRange: Range<Int>
    }

    /// The reference implementation's header size cap (100 MB).
    public static let maximumHeaderLength = 100_000_000

    /// The file's path as given to ``open(_:)`` (a source's name for ``open(source:)``).
    public let path: String
    /// The `__metadata__` map; nil when the header has none.
    public let metadata: [String: String]?
    /// The tensors in data order.
    public let entries: [Entry]
    /// `N`, the header length (including its padding).
    public let headerLength: Int
    /// The size of the whole file.
    public let fileSize: Int
    /// Where tensor data starts: `8 + N`.
    public var dataOffset: Int { 8 + headerLength }

    /// Where the bytes come from: a local file (`pread`) or a remote source
    /// (ranged reads of an object, ``ContainerByteSource``).
    private enum Backing {
        case file(SystemFile)
        case source(any ContainerByteSource)

        func readAll(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(CheckpointError) {
            switch self {
            case .file(let file): try file.readAll(into: buffer, at: Int64(offset))
            case .source(let source): try source.read(into: buffer, at: offset)
            }
        }
    }

    private let backing: Backing
    private let entryIndexByName: [BlobName: Int]  // byte-wise, like the reference

    private init(path: String, metadata: [String: String]?, entries: [Entry], headerLength: Int, fileSize: Int, backing: Backing) {
        self.path = path
        self.metadata = metadata
        self.entries = entries
        self.headerLength = headerLength
        self.fileSize = fileSize
        self.backing = backing
        var byName: [BlobName: Int] = [:]
        for (i, entry) in entries.enumerated() { byName[BlobName(entry.name)] = i }
        self.entryIndexByName = byName
    }

    deinit {
        if case .file(let file) = backing { file.close() }
    }

    /// Opens and validates a safetensors file. Reads only the header (`pread`).
    ///
    /// - Throws: `CheckpointError` naming the file and the rule broken.
    public static func open(_ path: String) throws(CheckpointError) -> SafetensorsFile {
        try open(path, calls: .live)
    }

    static func open(_ path: String, calls: SystemCalls) throws(CheckpointError) -> SafetensorsFile {
        let file = try calls.openFile(path, .readOnly)
        do throws(CheckpointError) {
            return try open(path, size: Int(try file.size()), backing: .file(file))
        } catch {
            file.close()
            throw error
        }
    }

    /// Opens and validates a safetensors file that is not a local file (an
    /// object in an object store): the same checks as ``open(_:)``, reading
    /// the header length, then the header, with ``ContainerByteSource/read(into:at:)``;
    /// each tensor is later read as one range of the source.
    ///
    /// - Throws: `CheckpointError` naming the source and the rule broken.
    public static func open(source: any ContainerByteSource) throws(CheckpointError) -> SafetensorsFile {
        try open(source.name, size: source.sizeInBytes, backing: .source(source))
    }

    private static func open(_ path: String, size: Int, backing: Backing) throws(CheckpointError) -> SafetensorsFile {
        do throws(CheckpointError) {
            guard size >= 8 else {
                throw CheckpointError(.truncated(what: "safetensors header length", needed: 8, available: UInt64(size)))
            }
            var prefix = [UInt8](repeating: 0, count: 8)
            try typedThrows { try prefix.withUnsafeMutableBytes { try backing.readAll(into: $0, at: 0) } }
            let declared = prefix.withUnsafeBytes { $0.load(littleEndianAt: 0) as UInt64 }
            let headerLength = try validateHeaderLength(declared, fileSize: size)
            var header = [UInt8](repeating: 0, count: headerLength)
            try typedThrows { try header.withUnsafeMutableBytes { try backing.readAll(into: $0, at: 8) } }
            let (metadata, entries) = try typedThrows {
                try header.withUnsafeBytes { try parseHeader($0, dataLength: size - 8 - headerLength) }
            }
            return SafetensorsFile(path: path, metadata: metadata, entries: entries, headerLength: headerLength, fileSize: size, backing: backing)
        } catch {
            throw error.path == nil ? error.adding(path: path) : error
        }
    }

    /// Checks a declared header length against the cap and the file size; returns it as an `Int`.
    static func validateHeaderLength(_ declared: UInt64, fileSize: Int) throws(CheckpointError) -> Int {
        guard declared <= UInt64(maximumHeaderLength) else {
            throw CheckpointError(.limitExceeded(what: "safetensors header length", limit: UInt64(maximumHeaderLength), actual: declared), offset: 0)
        }
        guard declared <= UInt64(fileSize - 8) else {
            throw CheckpointError(.truncated(what: "safetensors header", needed: 8 + declared, available: UInt64(fileSize)), offset: 8)
        }
        return Int(declared)
    }

    /// Parses and validates a header (the `N` bytes after the length) for a
    /// data section of `dataLength` bytes. Pure; returns the metadata and the
    /// entries in data order.
    public static func parseHeader(_ header: UnsafeRawBufferPointer, dataLength: Int) throws(CheckpointError) -> (metadata: [String: String]?, entries: [Entry]) {
        func invalid(_ reason: String) -> CheckpointError { CheckpointError(.invalidField(field: "safetensors header", reason: reason)) }
        guard String(validating: header, as: UTF8.self) != nil else { throw invalid("not valid UTF-8") }
        guard case let .object(members) = try JSONValue.parse(header, what: "safetensors header") else { throw invalid("not a JSON object") }
        var metadata: [String: String]?
        var entries: [Entry] = []
        entries.reserveCapacity(members.count)
        for (name, value) in members {
            if name.hasSameBytes(as: "__metadata__") {
                switch value {
                case .null: metadata = nil
                case let .object(pairs):
                    var texts: [(String, String)] = []
                    for (key, item) in pairs {
                        guard let text = item.stringValue else { throw invalid("__metadata__ value of '\(key.prefix(80))' is not a string") }
                        texts.append((key, text))
                    }
                    metadata = try [String: String](byteDistinctPairs: texts, what: "safetensors __metadata__")
                default: throw invalid("__metadata__ is not an object")
                }
                continue
            }
            entries.append(try parseEntry(name: name, value))
        }
        entries.sort { ($0.dataRange.lowerBound, $0.dataRange.upperBound) < ($1.dataRange.lowerBound, $1.dataRange.upperBound) }
        var end = 0
        for entry in entries {
            guard entry.dataRange.lowerBound == end else {
                throw CheckpointError(.invalidField(field: "data_offsets", reason: "tensor starts at \(entry.dataRange.lowerBound), the previous one ends at \(end) (gap or overlap)"),
                                      blobName: entry.name)
            }
            end = entry.dataRange.upperBound
        }
        guard end == dataLength else {
            throw CheckpointError(.sizeMismatch(what: "safetensors data section (tensors cover \(end) bytes, file has \(dataLength))", expected: UInt64(end), actual: UInt64(dataLength)))
        }
        return (metadata, entries)
    }

    private static func parseEntry(name: String, _ value: JSONValue) throws(CheckpointError) -> Entry {
        func invalid(_ field: String, _ reason: String) -> CheckpointError {
            CheckpointError(.invalidField(field: field, reason: reason), blobName: name)
        }
        guard case .object = value else { throw invalid("tensor info", "not a JSON object") }
        guard let dtypeName = value["dtype"]?.stringValue else { throw invalid("dtype", "missing or not a string") }
        guard let dtype = DType(safetensorsName: dtypeName) else {
            throw CheckpointError(.unknownDType(dtypeName), blobName: name)
        }
        guard let dims = value["shape"]?.arrayValue else { throw invalid("shape", "missing or not an array") }
        var dimensions: [Int] = []
        for dim in dims {
            guard let d = dim.nonNegativeIntValue else {
                if case let .number(text) = dim, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), UInt64(text) != nil {
                    // The reference takes any usize when another dimension is 0 (no elements);
                    // numpy cannot make such an array and our shapes stop at 2^63−1, so it is refused.
                    throw invalid("shape", "dimension \(text) is larger than 2^63−1, the largest dimension this package (and numpy) can represent, even in a tensor with no elements")
                }
                throw invalid("shape", "dimension \(dim.text) is not a non-negative 64-bit integer")
            }
            dimensions.append(d)
        }
        let shape: Shape
        do throws(CheckpointError) { shape = try Shape(dimensions) } catch { throw error.adding(blobName: name) }
        guard let offsets = value["data_offsets"]?.arrayValue, offsets.count == 2,
              let begin = offsets[0].nonNegativeIntValue, let end = offsets[1].nonNegativeIntValue else {
            throw invalid("data_offsets", "missing, or not two non-negative 64-bit integers")
        }
        guard begin <= end else { throw invalid("data_offsets", "begin \(begin) is after end \(end)") }
        let byteCount: Int
        do throws(CheckpointError) { byteCount = try shape.byteCount(for: dtype)! } catch { throw error.adding(blobName: name) }
        guard end - begin == byteCount else {
            throw CheckpointError(.sizeMismatch(what: "\(dtype) tensor of shape \(shape) (data_offsets [\(begin), \(end)])", expected: UInt64(byteCount), actual: UInt64(end - begin)),
                                  blobName: name)
        }
        return Entry(name: name, dtype: dtype, shape: shape, dataRange: begin..<end)
    }

    // MARK: Reading

    /// The tensor names, sorted by their UTF-8 bytes.
    public var names: [String] { entries.map(\.name).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) } }

    /// Whether a tensor has this name (byte-wise).
    public func contains(_ name: String) -> Bool { entryIndexByName[BlobName(name)] != nil }

    /// The header entry of `name`.
    public func entry(_ name: String) throws(CheckpointError) -> Entry {
        guard let index = entryIndexByName[BlobName(name)] else { throw CheckpointError(.blobNotFound(name), blobName: name, path: path) }
        return entries[index]
    }

    /// Reads a tensor's bytes into `destination`, which must be exactly its size
    /// (`pread`, or one ranged read of a source).
    public func read(_ name: String, into destination: UnsafeMutableRawBufferPointer) throws(CheckpointError) {
        let entry = try entry(name)
        guard destination.count == entry.dataRange.count else {
            throw CheckpointError(.sizeMismatch(what: "destination buffer", expected: UInt64(entry.dataRange.count), actual: UInt64(destination.count)),
                                  blobName: name, path: path)
        }
        guard destination.count > 0 else { return }
        do throws(CheckpointError) {
            try backing.readAll(into: destination, at: dataOffset + entry.dataRange.lowerBound)
        } catch {
            throw error.adding(blobName: name, path: path)
        }
    }

    /// Neighbouring tensors of a remote file read together, up to this many bytes.
    static let groupedReadBytes = 8 << 20
    /// Grouped reads of a remote file in flight at once.
    static let concurrentGroupedReads = 8

    /// Reads several tensors, each into its own destination (exactly its size).
    /// Every name and size is checked before anything is read.
    ///
    /// A local file reads them one after the other (`pread`). A remote source
    /// would otherwise pay one round trip per tensor in a row, so: tensors that
    /// are neighbours in the file are read as one range of up to 8 MiB (then
    /// copied out), 8 such reads at once; a tensor of 8 MiB or more is read
    /// alone afterwards, in the source's own parallel ranges.
    public func read(batch requests: [(name: String, destination: UnsafeMutableRawBufferPointer)]) throws(CheckpointError) {
        var entriesByRequest: [Entry] = []
        for request in requests {
            let entry = try entry(request.name)
            guard request.destination.count == entry.dataRange.count else {
                throw CheckpointError(.sizeMismatch(what: "destination buffer", expected: UInt64(entry.dataRange.count), actual: UInt64(request.destination.count)),
                                      blobName: request.name, path: path)
            }
            entriesByRequest.append(entry)
        }
        guard case .source = backing else {
            for request in requests { try read(request.name, into: request.destination) }
            return
        }
        // Groups of requests whose tensors follow each other in the file, in file order.
        var groups: [[Int]] = []
        var large: [Int] = []
        var groupEnd = -1, groupStart = 0
        for index in requests.indices.sorted(by: { entriesByRequest[$0].dataRange.lowerBound < entriesByRequest[$1].dataRange.lowerBound }) {
            let range = entriesByRequest[index].dataRange
            if range.isEmpty { continue }
            if range.count >= SafetensorsFile.groupedReadBytes {
                large.append(index)
            } else if range.lowerBound == groupEnd, range.upperBound - groupStart <= SafetensorsFile.groupedReadBytes {
                groups[groups.count - 1].append(index)
                groupEnd = range.upperBound
            } else {
                groups.append([index])
                groupStart = range.lowerBound
                groupEnd = range.upperBound
            }
        }
        nonisolated(unsafe) let requests = requests
        let entries = entriesByRequest, runs = groups
        try BlockingTasks.run(count: runs.count, limit: SafetensorsFile.concurrentGroupedReads) { [self] index throws(CheckpointError) in
            try readGroup(runs[index].map { (requests[$0].name, requests[$0].destination, entries[$0].dataRange) })
        }
        for index in large { try read(requests[index].name, into: requests[index].destination) }
    }

    /// One read of the neighbouring tensors `members` (in file order), copied out;
    /// a single tensor is read straight into its destination.
    private func readGroup(_ members: [(name: String, destination: UnsafeMutableRawBufferPointer, range: Range<Int>)]) throws(CheckpointError) {
        if members.count == 1 {
            try read(members[0].name, into: members[0].destination)
            return
        }
        let start = members[0].range.lowerBound, end = members[members.count - 1].range.upperBound
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: end - start, alignment: 64)
        defer { scratch.deallocate() }
        do throws(CheckpointError) {
            try backing.readAll(into: scratch, at: dataOffset + start)
        } catch {
            throw error.adding(blobName: members.map(\.name).joined(separator: ", "), path: path)
        }
        for member in members {
            member.destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: scratch[(member.range.lowerBound - start)..<(member.range.upperBound - start)]))
        }
    }

    /// A tensor's bytes.
    public func read(_ name: String) throws(CheckpointError) -> [UInt8] {
        let entry = try entry(name)
        var bytes = [UInt8](repeating: 0, count: entry.dataRange.count)
        try typedThrows { try bytes.withUnsafeMutableBytes { try read(name, into: $0) } }
        return bytes
    }

    // MARK: Writing

    /// The rank of each dtype in the reference implementation's `Dtype` enum;
    /// `save_file` orders tensors by this rank, highest first, then by name.
    static func dtypeRank(_ dtype: DType) -> Int? {
        switch dtype {
        case .bool: return 0
        case .f4: return 1
        case .f6E2M3: return 2
        case .f6E3M2: return 3
        case .uint8: return 4
        case .int8: return 5
        case .f8E5M2: return 6
        case .f8E4M3: return 7
        case .f8E8M0: return 8
        case .f8E4M3FNUZ: return 9
        case .f8E5M2FNUZ: return 10
        case .int16: return 11
        case .uint16: return 12
        case .float16: return 13
        case .bfloat16: return 14
        case .int32: return 15
        case .uint32: return 16
        case .float32: return 17
        case .complex64: return 18
        case .float64: return 19
        case .int64: return 20
        case .uint64: return 21
        case .complex128, .raw, .string: return nil
        }
    }

    /// The order `save_file` writes tensors in: dtype rank descending, then name (bytes) ascending.
    static func writeOrder(_ items: [(name: String, dtype: DType)]) -> [Int] {
        Array(items.indices).sorted { a, b in
            let ra = dtypeRank(items[a].dtype) ?? -1, rb = dtypeRank(items[b].dtype) ?? -1
            if ra != rb { return ra > rb }
            return items[a].name.utf8.lexicographicallyPrecedes(items[b].name.utf8)
        }
    }

    /// The header (length prefix, JSON, padding) for tensors already in write order.
    ///
    /// Metadata keys are written sorted (Python's `save_file` writes them in
    /// hash-map order, which differs from run to run; with at most one key the
    /// bytes are identical).
    static func encodeHeader(_ tensors: [(name: String, dtype: DType, shape: Shape, byteCount: Int)], metadata: [String: String]?) -> [UInt8] {
        var members: [(String, JSONValue)] = []
        if let metadata {
            let keys = metadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            members.append(("__metadata__", .object(keys.map { ($0, .string(metadata[$0]!)) })))
        }
        var offset = 0
        for tensor in tensors {
            members.append((tensor.name, .object([
                ("dtype", .string(tensor.dtype.safetensorsName!)),
                ("shape", .array(tensor.shape.dimensions.map { JSONValue.integer($0) })),
                ("data_offsets", .array([.integer(offset), .integer(offset + tensor.byteCount)])),
            ])))
            offset += tensor.byteCount
        }
        var json = JSONValue.object(members).serialized()
        json += [UInt8](repeating: UInt8(ascii: " "), count: (8 - json.count % 8) % 8)
        var out = [UInt8](repeating: 0, count: 8)
        out.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(json.count).littleEndian, as: UInt64.self) }
        return out + json
    }

    /// Writes `tensors` as a safetensors file at `path`, replacing it atomically.
    ///
    /// The bytes are those of the Python package's `save_file` for the same
    /// tensors and metadata (metadata keys are written sorted; `save_file` writes them in hash-map order, so the bytes match when there is at most one key).
    /// Payloads go from the caller's memory to `pwritev`, through a temporary
    /// file renamed into place; `durability` says what is synced.
    ///
    /// - Throws: `CheckpointError.Code.invalidField` for a dtype
    ///   safetensors lacks (C128, RAW, STRING), the name `__metadata__`, a duplicate name, or
    ///   a header over the size cap; the errors of the write.
    public static func write(_ tensors: [BlobSource], metadata: [String: String]? = nil, to path: String, durability: Durability = .none) throws(CheckpointError) {
        try write(tensors, metadata: metadata, to: path, durability: durability, calls: .live)
    }

    static func write(_ tensors: [BlobSource], metadata: [String: String]?, to path: String, durability: Durability, calls: SystemCalls) throws(CheckpointError) {
        var seen = Set<BlobName>()
        for tensor in tensors {
            guard tensor.dtype.safetensorsName != nil else {
                throw CheckpointError(.invalidField(field: "dtype", reason: "safetensors has no \(tensor.dtype) dtype"), blobName: tensor.name, path: path)
            }
            // The empty name is legal (the reference writes and reads it); "__metadata__" is the metadata's key.
            guard !tensor.name.hasSameBytes(as: "__metadata__") else {
                throw CheckpointError(.invalidField(field: "name", reason: "'\(tensor.name)' cannot name a safetensors tensor"), blobName: tensor.name, path: path)
            }
            guard seen.insert(BlobName(tensor.name)).inserted else {
                throw CheckpointError(.invalidField(field: "name", reason: "duplicate tensor name"), blobName: tensor.name, path: path)
            }
            let expected = try shapeByteCount(tensor)
            guard expected == tensor.bytes.count else {
                throw CheckpointError(.sizeMismatch(what: "\(tensor.dtype) tensor of shape \(tensor.shape)", expected: UInt64(expected), actual: UInt64(tensor.bytes.count)),
                                      blobName: tensor.name, path: path)
            }
        }
        let order = writeOrder(tensors.map { ($0.name, $0.dtype) })
        let ordered = order.map { tensors[$0] }
        let header = encodeHeader(ordered.map { ($0.name, $0.dtype, $0.shape, $0.bytes.count) }, metadata: metadata)
        guard header.count - 8 <= maximumHeaderLength else {
            throw CheckpointError(.limitExceeded(what: "safetensors header length", limit: UInt64(maximumHeaderLength), actual: UInt64(header.count - 8)), path: path)
        }
        try typedThrows {
            try header.withUnsafeBytes { headerBytes in
                try AtomicFile.write([headerBytes] + ordered.map(\.bytes), to: path, durability: durability, calls: calls)
            }
        }
    }

    private static func shapeByteCount(_ tensor: BlobSource) throws(CheckpointError) -> Int {
        do throws(CheckpointError) { return try tensor.shape.byteCount(for: tensor.dtype)! } catch { throw error.adding(blobName: tensor.name) }
    }
}

extension DType {
    /// The dtype of a safetensors dtype name (`F32`, `BF16`, `F8_E4M3`…), or nil.
    public init?(safetensorsName name: String) {
        guard let dtype = DType.allCases.first(where: { $0.safetensorsName == name }) else { return nil }
        self = dtype
    }
}
