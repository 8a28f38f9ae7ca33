import BlobCodec

/// Where a ``ContainerWriter`` sends a new file's bytes instead of a local
/// temporary: an object store's multipart upload, for example.
///
/// The writer calls ``append(_:at:)`` from one thread at a time, with offsets
/// that start at 0 and always continue where the previous call ended (the
/// writer produces a file front to back when it writes to a sink). The
/// segments are valid only during the call: a sink that keeps bytes copies
/// them. A sink may block in ``append(_:at:)`` to bound its memory.
///
/// Exactly one of ``commit()`` (make the whole file visible at once) and
/// ``abort()`` (leave nothing) ends a sink's life.
public protocol ContainerByteSink: AnyObject {
    /// Appends the concatenation of `segments`, which starts at byte `offset` of the file.
    func append(_ segments: [UnsafeRawBufferPointer], at offset: Int) throws(CheckpointError)
    /// Makes the complete file visible under its final name, atomically.
    func commit() throws(CheckpointError)
    /// Abandons the file: nothing becomes visible and nothing is left behind. Idempotent.
    func abort()
}

/// Random access to the bytes of a file that is not a local file (an object
/// in an object store), for ``ContainerReader/open(source:options:)``.
///
/// ``read(into:at:)`` may be called from several threads at once; it reads
/// exactly `buffer.count` bytes or throws.
public protocol ContainerByteSource: AnyObject, Sendable {
    /// A name for errors (an `s3://bucket/key` URL).
    var name: String { get }
    /// The file's size in bytes.
    var sizeInBytes: Int { get }
    /// Reads exactly `buffer.count` bytes at `offset` into `buffer`.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(CheckpointError)
    /// Reads like ``read(into:at:)`` and returns the CRC32C of each `blockSize`
    /// piece of `buffer` (the last may be shorter): block `i` is
    /// `buffer[i * blockSize ..< min((i + 1) * blockSize, buffer.count)]`.
    ///
    /// The default reads, then checksums. A source that receives bytes in pieces
    /// (an HTTP body) checksums each piece as it copies it, while it is in cache,
    /// and saves the reader a second pass over the data.
    func readChecksummed(into buffer: UnsafeMutableRawBufferPointer, at offset: Int, blockSize: Int) throws(CheckpointError) -> [UInt32]
}

extension ContainerByteSource {
    /// Reads, then checksums each block (the default for sources that cannot do better).
    public func readChecksummed(into buffer: UnsafeMutableRawBufferPointer, at offset: Int, blockSize: Int) throws(CheckpointError) -> [UInt32] {
        try read(into: buffer, at: offset)
        // Pieces from 0 are whole blocks, one each.
        return BlockChecksumAssembler.pieces(of: UnsafeRawBufferPointer(buffer), at: 0, blockSize: blockSize).map(\.crc)
    }
}

/// CRC32Cs of the `blockSize` blocks of a buffer, assembled from pieces that
/// arrive in any order: each piece lies inside one block, and a block's pieces
/// together cover it exactly once (a ranged download's responses, cut at the
/// block boundaries). O(pieces · log blockSize), no pass over the data.
public struct BlockChecksumAssembler: Sendable {
    /// One checksummed piece: bytes `start ..< start + length` of the buffer.
    public struct Piece: Sendable {
        /// The piece's first byte in the buffer.
        public var start: Int
        /// Its length in bytes.
        public var length: Int
        /// Its CRC32C.
        public var crc: UInt32
        /// A piece of `length` bytes at `start` whose CRC32C is `crc`.
        public init(start: Int, length: Int, crc: UInt32) {
            self.start = start
            self.length = length
            self.crc = crc
        }
    }

    /// The block size (the last block may be shorter).
    public let blockSize: Int
    private var pieces: [Piece] = []

    /// An empty assembler for blocks of `blockSize` bytes.
    public init(blockSize: Int) {
        precondition(blockSize > 0, "blockSize must be positive")
        self.blockSize = blockSize
    }

    /// Adds pieces, in any order.
    public mutating func add(_ more: [Piece]) { pieces += more }

    /// Checksums `bytes` (which start at `start` in the buffer), cut at block boundaries.
    public static func pieces(of bytes: UnsafeRawBufferPointer, at start: Int, blockSize: Int) -> [Piece] {
        var result: [Piece] = []
        append(bytes, at: start, blockSize: blockSize, to: &result)
        return result
    }

    /// Checksums `bytes` (which start at `start` in the buffer) into `pieces`, cut at
    /// block boundaries; a part that continues the last piece inside its block extends
    /// it, so bytes that arrive in many small runs still make one piece per block and range.
    public static func append(_ bytes: UnsafeRawBufferPointer, at start: Int, blockSize: Int, to pieces: inout [Piece]) {
        precondition(blockSize > 0, "blockSize must be positive")
        var done = 0
        while done < bytes.count {
            let position = start + done
            let n = min(bytes.count - done, blockSize - position % blockSize)
            let part = UnsafeRawBufferPointer(rebasing: bytes[done..<(done + n)])
            if let last = pieces.last, position % blockSize != 0, last.start + last.length == position {
                pieces[pieces.count - 1].crc = CRC32C.extend(last.crc, part)
                pieces[pieces.count - 1].length += n
            } else {
                pieces.append(Piece(start: position, length: n, crc: CRC32C.checksum(part)))
            }
            done += n
        }
    }

    /// The CRC32C of every block of a buffer of `count` bytes; nil when the pieces do not tile it exactly.
    public func blockChecksums(count: Int) -> [UInt32]? {
        let blocks = (count + blockSize - 1) / blockSize
        var crcs = [UInt32](repeating: 0, count: blocks)
        var next = 0
        for piece in pieces.sorted(by: { $0.start < $1.start }) {
            guard piece.start == next, piece.length > 0, piece.start / blockSize == (piece.start + piece.length - 1) / blockSize else { return nil }
            let block = piece.start / blockSize
            crcs[block] = piece.start % blockSize == 0 ? piece.crc : CRC32C.combine(crcs[block], piece.crc, lengthOfB: piece.length)
            next += piece.length
        }
        return next == count ? crcs : nil
    }
}
