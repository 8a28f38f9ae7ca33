import BlobCodec
import Synchronization

/// A Swift scalar type stored as one `DType`.
public protocol TensorElement: BitwiseCopyable, Sendable {
    /// The dtype that stores this type's values.
    static var dtype: DType { get }
}

extension Bool: TensorElement { public static var dtype: DType { .bool } }
extension UInt8: TensorElement { public static var dtype: DType { .uint8 } }
extension Int8: TensorElement { public static var dtype: DType { .int8 } }
extension UInt16: TensorElement { public static var dtype: DType { .uint16 } }
extension Int16: TensorElement { public static var dtype: DType { .int16 } }
extension UInt32: TensorElement { public static var dtype: DType { .uint32 } }
extension Int32: TensorElement { public static var dtype: DType { .int32 } }
extension UInt64: TensorElement { public static var dtype: DType { .uint64 } }
extension Int64: TensorElement { public static var dtype: DType { .int64 } }
/// `Int` is stored as `DType.int64` (Swift's `Int` is 64 bits on every platform this package supports).
extension Int: TensorElement { public static var dtype: DType { .int64 } }
extension Float: TensorElement { public static var dtype: DType { .float32 } }
extension Double: TensorElement { public static var dtype: DType { .float64 } }
#if arch(x86_64) || arch(arm64)
extension Float16: TensorElement { public static var dtype: DType { .float16 } }
#endif

/// One blob of a ``Workspace``: a dtype, a shape and its bytes, with
/// copy-on-write storage.
///
/// Copying a `Tensor` copies a reference; the bytes are copied only when a
/// copy that shares them is mutated (``withUnsafeMutableBytes(_:)``). That is
/// what makes ``CheckpointManager/saveAsync(epoch:metric:)`` cheap: its snapshot
/// shares every payload with the workspace until the workspace changes one.
///
///     let weights = try Tensor([Float](repeating: 0.5, count: 1024), shape: [32, 32])
///     let step = Tensor(scalar: Int64(1000))
///     let vocabulary = Tensor(strings: ["<pad>", "<eos>", "hello"])
///
/// Byte layout: little-endian, row-major, as FORMAT.md §3 says for each dtype.
/// A `DType.string` tensor holds `StringTensor`'s layout (a length table,
/// then UTF-8 bytes), validated on creation; a `DType.raw` tensor of `n`
/// bytes has shape `[n]`.
public struct Tensor: Sendable, Equatable, CustomStringConvertible {
    /// The element type.
    public let dtype: DType
    /// The dimensions.
    public let shape: Shape
    var storage: TensorStorage

    /// The size of the payload in bytes.
    public var byteCount: Int { storage.count }

    init(dtype: DType, shape: Shape, storage: TensorStorage) {
        self.dtype = dtype
        self.shape = shape
        self.storage = storage
    }

    /// A zero-filled tensor.
    ///
    /// - Throws: `CheckpointError.Code.invalidShape` when the byte
    ///   count overflows; `CheckpointError.Code.invalidField`
    ///   for `DType.string` (use ``init(strings:shape:)``).
    public init(zeros dtype: DType, shape: Shape) throws(CheckpointError) {
        guard let count = try shape.byteCount(for: dtype) else {
            throw CheckpointError(.invalidField(field: "dtype", reason: "a STRING tensor is made from strings: Tensor(strings:)"))
        }
        let storage = TensorStorage(uninitializedByteCount: count)
        storage.base.initializeMemory(as: UInt8.self, repeating: 0, count: count)
        self.init(dtype: dtype, shape: shape, storage: storage)
    }

    /// A tensor holding a copy of `bytes`.
    ///
    /// - Throws: `CheckpointError.Code.sizeMismatch`
    ///   when the byte count disagrees with dtype and shape; for
    ///   `DType.string`, the errors of `StringTensor.decode`.
    public init(dtype: DType, shape: Shape, bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        try Tensor.validate(dtype: dtype, shape: shape, bytes: bytes)
        let storage = TensorStorage(uninitializedByteCount: bytes.count)
        if let source = bytes.baseAddress { storage.base.copyMemory(from: source, byteCount: bytes.count) }
        self.init(dtype: dtype, shape: shape, storage: storage)
    }

    /// A tensor holding a copy of `bytes`; see ``init(dtype:shape:bytes:)-(_,_,UnsafeRawBufferPointer)``.
    public init(dtype: DType, shape: Shape, bytes: [UInt8]) throws(CheckpointError) {
        self = try typedThrows { try bytes.withUnsafeBytes { try Tensor(dtype: dtype, shape: shape, bytes: $0) } }
    }

    /// A tensor of `values`, shaped `shape` (default: one dimension of `values.count`).
    ///
    /// - Throws: `CheckpointError.Code.sizeMismatch`
    ///   when the shape's element count is not `values.count`.
    public init<Element: TensorElement>(_ values: [Element], shape: Shape? = nil) throws(CheckpointError) {
        let shape = shape ?? Shape(arrayLiteral: values.count)
        self = try typedThrows { try values.withUnsafeBytes { try Tensor(dtype: Element.dtype, shape: shape, bytes: $0) } }
    }

    /// A rank-0 tensor holding one value.
    public init<Element: TensorElement>(scalar value: Element) {
        let storage = TensorStorage(uninitializedByteCount: MemoryLayout<Element>.size)
        storage.base.storeBytes(of: value, as: Element.self)
        self.init(dtype: Element.dtype, shape: [], storage: storage)
    }

    /// A `DType.string` tensor (default shape: one dimension of `strings.count`).
    ///
    /// - Precondition: `shape`, when given, has `strings.count` elements.
    public init(strings: [String], shape: Shape? = nil) {
        let shape = shape ?? Shape(arrayLiteral: strings.count)
        precondition(shape.elementCount == strings.count, "shape \(shape) does not hold \(strings.count) strings")
        let bytes = StringTensor.encode(strings)
        let storage = TensorStorage(uninitializedByteCount: bytes.count)
        bytes.withUnsafeBytes { if let source = $0.baseAddress { storage.base.copyMemory(from: source, byteCount: $0.count) } }
        self.init(dtype: .string, shape: shape, storage: storage)
    }

    /// A `DType.raw` tensor of opaque bytes, shape `[bytes.count]`.
    public init(rawBytes bytes: [UInt8]) {
        let storage = TensorStorage(uninitializedByteCount: bytes.count)
        bytes.withUnsafeBytes { if let source = $0.baseAddress { storage.base.copyMemory(from: source, byteCount: $0.count) } }
        self.init(dtype: .raw, shape: Shape(arrayLiteral: bytes.count), storage: storage)
    }

    /// Throws unless `bytes` is a valid payload for `dtype` and `shape`.
    static func validate(dtype: DType, shape: Shape, bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        if let expected = try shape.byteCount(for: dtype) {
            guard expected == bytes.count else {
                throw CheckpointError(.sizeMismatch(what: "\(dtype) tensor of shape \(shape)", expected: UInt64(expected), actual: UInt64(bytes.count)))
            }
        } else {
            _ = try StringTensor.decode(bytes, count: shape.elementCount)
        }
    }

    // MARK: Reading

    /// Calls `body` with the payload bytes. O(1), no copy.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try withExtendedLifetime(storage) { () throws(E) -> R in
            try body(UnsafeRawBufferPointer(start: storage.base, count: storage.count))
        }
    }

    /// A copy of the payload bytes.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// The elements, converted from the payload.
    ///
    /// - Throws: `CheckpointError.Code.invalidField` when
    ///   `Element` is not this tensor's dtype.
    public func scalars<Element: TensorElement>(as type: Element.Type = Element.self) throws(CheckpointError) -> [Element] {
        guard Element.dtype == dtype, MemoryLayout<Element>.stride == MemoryLayout<Element>.size else {
            throw CheckpointError(.invalidField(field: "element type", reason: "\(Element.self) is \(Element.dtype), the tensor is \(dtype)"))
        }
        let count = shape.elementCount
        return [Element](unsafeUninitializedCapacity: count) { buffer, initialized in
            UnsafeMutableRawBufferPointer(buffer).copyMemory(from: UnsafeRawBufferPointer(start: storage.base, count: count * MemoryLayout<Element>.size))
            initialized = count
        }
    }

    /// The strings of a `DType.string` tensor.
    ///
    /// - Throws: `CheckpointError.Code.invalidField` for another
    ///   dtype; the errors of `StringTensor.decode` if the bytes
    ///   were mutated into an invalid layout.
    public func strings() throws(CheckpointError) -> [String] {
        guard dtype == .string else {
            throw CheckpointError(.invalidField(field: "dtype", reason: "the tensor is \(dtype), not STRING"))
        }
        return try withUnsafeBytes { (bytes) throws(CheckpointError) -> [String] in try StringTensor.decode(bytes, count: shape.elementCount) }
    }

    // MARK: Writing

    /// Calls `body` with the payload bytes for writing, copying them first if
    /// another tensor (a snapshot, a copy) shares them.
    public mutating func withUnsafeMutableBytes<R, E: Error>(_ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R {
        if !isKnownUniquelyReferenced(&storage) {
            storage = storage.copy()
        }
        // Incremental saves compare this count with the one they saw (no byte is read).
        storage.noteMutation()
        return try body(UnsafeMutableRawBufferPointer(start: storage.base, count: storage.count))
    }

    /// True when no other tensor shares this one's bytes (mutating it will not copy).
    public mutating func isUniquelyReferenced() -> Bool { isKnownUniquelyReferenced(&storage) }

    /// Same dtype, shape and bytes.
    public static func == (lhs: Tensor, rhs: Tensor) -> Bool {
        guard lhs.dtype == rhs.dtype, lhs.shape == rhs.shape, lhs.byteCount == rhs.byteCount else { return false }
        if lhs.storage === rhs.storage { return true }
        return lhs.withUnsafeBytes { a in rhs.withUnsafeBytes { b in a.elementsEqual(b) } }
    }

    /// The dtype, shape and byte count, e.g. `Tensor(F32, [1024], 4096 bytes)`.
    public var description: String { "Tensor(\(dtype), \(shape), \(byteCount) bytes)" }
}

/// The bytes of one or more ``Tensor``s (shared until one of them mutates).
final class TensorStorage: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let count: Int
    /// Write accesses so far (see ``IncrementalTracker``).
    let mutations = Atomic<UInt64>(0)

    /// Uninitialized memory; the caller fills all of it before the tensor is used.
    init(uninitializedByteCount count: Int) {
        self.count = count
        self.base = TensorMemory.allocate(byteCount: count)
    }

    /// The most bytes one allocation sized by a file may take (64 GiB, the
    /// per-blob cap of ``ReaderOptions/maximumRawSize`` and `DecodeOptions`).
    static let maximumCheckedByteCount = 64 << 30

    /// Memory for `count` bytes whose size came from a file: the one path
    /// through which every decode of a declared size allocates (the manager's
    /// loads, ``TensorFile``, conversions, npz members).
    ///
    /// - Throws: `CheckpointError.Code.limitExceeded` when
    ///   `count` is negative, above `limit` (default 64 GiB), or cannot be allocated.
    init(checkedByteCount count: Int, limit: Int = TensorStorage.maximumCheckedByteCount) throws(CheckpointError) {
        guard count >= 0, count <= limit else {
            throw CheckpointError(.limitExceeded(what: "declared tensor size (bytes)", limit: UInt64(max(0, limit)), actual: UInt64(clamping: count)))
        }
        guard let base = TensorMemory.allocateIfAvailable(byteCount: count) else {
            throw CheckpointError(.limitExceeded(what: "memory for a tensor (bytes)", limit: 0, actual: UInt64(count)))
        }
        self.count = count
        self.base = base
    }

    func copy() -> TensorStorage {
        let copy = TensorStorage(uninitializedByteCount: count)
        copy.base.copyMemory(from: base, byteCount: count)
        return copy
    }

    deinit { TensorMemory.deallocate(base) }
}
