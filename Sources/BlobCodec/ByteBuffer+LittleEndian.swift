/// Appends fixed-width little-endian integers and raw bytes to a byte array.
/// Shared with CheckpointIO (package access), which builds its frames,
/// trailers and index the same way.
///
/// CheckpointIO's writers of frames, trailers and the index make one call per
/// field (hundreds of thousands per commit of a checkpoint of small tensors):
/// the integer writes have concrete overloads so that those are direct calls.
package struct LittleEndianWriter {
    package var bytes: [UInt8] = []

    @inlinable
    package init(capacity: Int) { bytes.reserveCapacity(capacity) }

    @inlinable
    package mutating func write<T: FixedWidthInteger>(littleEndian value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    // Concrete overloads: a caller in another module (CheckpointIO) gets a direct call
    // instead of the generic one's protocol-witness calls (measured: most of the
    // time of ContainerIndex.encode for 20,000 blobs went to those).
    @inlinable package mutating func write(littleEndian value: UInt8) { bytes.append(value) }
    @inlinable package mutating func write(littleEndian value: UInt16) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    @inlinable package mutating func write(littleEndian value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    @inlinable package mutating func write(littleEndian value: UInt64) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }

    @inlinable
    package mutating func write<Bytes: Collection<UInt8>>(_ data: Bytes) { bytes.append(contentsOf: data) }

    @inlinable
    package mutating func write(zeros count: Int) { bytes.append(contentsOf: repeatElement(0, count: count)) }
}

/// Reads fixed-width little-endian integers from a buffer, checking every
/// read against the buffer's end before touching memory.
struct LittleEndianReader {
    let buffer: UnsafeRawBufferPointer
    private(set) var position: Int = 0
    /// Names the structure being read, for error messages.
    let what: String

    init(_ buffer: UnsafeRawBufferPointer, what: String) {
        self.buffer = buffer
        self.what = what
    }

    var remaining: Int { buffer.count - position }

    mutating func read<T: FixedWidthInteger>(littleEndian _: T.Type) throws(CheckpointError) -> T {
        let size = MemoryLayout<T>.size
        try require(size)
        let value = buffer.loadUnaligned(fromByteOffset: position, as: T.self)
        position += size
        return T(littleEndian: value)
    }

    mutating func readBytes(_ count: Int) throws(CheckpointError) -> UnsafeRawBufferPointer {
        try require(count)
        let slice = UnsafeRawBufferPointer(rebasing: buffer[position..<(position + count)])
        position += count
        return slice
    }

    private func require(_ count: Int) throws(CheckpointError) {
        guard count >= 0, count <= remaining else {
            throw CheckpointError(.truncated(what: what, needed: UInt64(position) + UInt64(max(count, 0)), available: UInt64(buffer.count)))
        }
    }
}

extension String {
    /// Decodes strictly valid UTF-8, or returns nil (no replacement characters).
    init?(validatingUTF8Bytes bytes: UnsafeRawBufferPointer) {
        guard let decoded = String(validating: bytes, as: UTF8.self) else { return nil }
        self = decoded
    }
}
