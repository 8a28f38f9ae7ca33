import BlobCodec

/// The fixed structures of a container file (FORMAT.md §4): constants, and
/// the encoding and validated parsing of the file header, record frames,
/// trailers and deletion markers. Pure code: bytes in, values out.
enum ContainerLayout {
    static let fileMagic: [UInt8] = [0x89, 0x43, 0x4B, 0x50, 0x54, 0x0D, 0x0A, 0x1A]
    static let version: UInt16 = 1
    static let fileHeaderSize = 64
    static let frameSize = 32
    static let trailerSize = 64
    static let frameMagic: UInt32 = 0x4352_4B43  // "CKRC"
    static let trailerMagic: UInt32 = 0x5254_4B43  // "CKTR"
    static let trailerEndMagic: UInt32 = 0x444E_4B43  // "CKND"
    static let unitAlignment = 8

    /// Record kinds (FORMAT.md §4.3).
    enum Kind: UInt16 {
        case blob = 1
        case deletion = 2
        case blobReference = 3
        case index = 4
    }

    static func alignUp(_ value: Int, _ alignment: Int) -> Int {
        (value + alignment - 1) & ~(alignment - 1)
    }

    // MARK: File header

    static func encodeFileHeader(alignment: Int) -> [UInt8] {
        var w = LittleEndianWriter(capacity: fileHeaderSize)
        w.write(fileMagic)
        w.write(littleEndian: version)
        w.write(littleEndian: UInt16(0))
        w.write(littleEndian: UInt32(alignment))
        w.write(zeros: 44)
        w.write(littleEndian: CRC32C.checksum(w.bytes))
        return w.bytes
    }

    /// Validates the file header; returns the writer's alignment.
    static func parseFileHeader(_ bytes: UnsafeRawBufferPointer) throws(CheckpointError) -> Int {
        guard bytes.count >= fileHeaderSize else {
            throw CheckpointError(.truncated(what: "file header", needed: UInt64(fileHeaderSize), available: UInt64(bytes.count)))
        }
        guard bytes.prefix(8).elementsEqual(fileMagic) else {
            throw CheckpointError(.badMagic(what: "file header", expected: 0x504B_4389, actual: bytes.load(littleEndianAt: 0)), offset: 0)
        }
        let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<60]))
        let stored: UInt32 = bytes.load(littleEndianAt: 60)
        guard crc == stored else { throw CheckpointError(.headerChecksumMismatch(expected: stored, actual: crc), offset: 60) }
        let version: UInt16 = bytes.load(littleEndianAt: 8)
        guard version == ContainerLayout.version else { throw CheckpointError(.unsupportedVersion(what: "file", version: UInt32(version)), offset: 8) }
        let flags: UInt16 = bytes.load(littleEndianAt: 10)
        guard flags == 0 else { throw CheckpointError(.invalidField(field: "file flags", reason: "reserved bits set"), offset: 10) }
        let alignment = Int(bytes.load(littleEndianAt: 12) as UInt32)
        guard isValidAlignment(alignment) else {
            throw CheckpointError(.invalidField(field: "file alignment", reason: "\(alignment) is not a power of two in 8...4096"), offset: 12)
        }
        guard bytes[16..<60].allSatisfy({ $0 == 0 }) else {
            let index = bytes[16..<60].firstIndex { $0 != 0 }!
            throw CheckpointError(.invalidField(field: "file header", reason: "reserved byte at \(index) is not zero"), offset: UInt64(index))
        }
        return alignment
    }

    static func isValidAlignment(_ alignment: Int) -> Bool {
        alignment >= 8 && alignment <= 4096 && alignment & (alignment - 1) == 0
    }

    // MARK: Record frame

    struct Frame: Equatable {
        var kind: UInt16
        var headerLength: Int
        var paddingLength: Int
        var payloadLength: Int
        var payloadCRC: UInt32

        /// Bytes from the frame's start to the payload's start.
        var payloadStart: Int { frameSize + headerLength + paddingLength }
        /// Bytes from the frame's start to the payload's end (without the pad to 8).
        var length: Int { payloadStart + payloadLength }

        func encoded() -> [UInt8] {
            var w = LittleEndianWriter(capacity: frameSize)
            w.write(littleEndian: frameMagic)
            w.write(littleEndian: kind)
            w.write(littleEndian: UInt16(0))
            w.write(littleEndian: UInt32(headerLength))
            w.write(littleEndian: UInt32(paddingLength))
            w.write(littleEndian: UInt64(payloadLength))
            w.write(littleEndian: payloadCRC)
            w.write(littleEndian: CRC32C.checksum(w.bytes))
            return w.bytes
        }

        /// Parses and checks a frame (magic, CRC, flags); the caller checks the lengths against its bounds.
        static func parse(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(CheckpointError) -> Frame {
            guard bytes.count >= frameSize else {
                throw CheckpointError(.truncated(what: "record frame", needed: UInt64(frameSize), available: UInt64(bytes.count)), offset: UInt64(offset))
            }
            let magic: UInt32 = bytes.load(littleEndianAt: 0)
            guard magic == frameMagic else {
                throw CheckpointError(.badMagic(what: "record frame", expected: frameMagic, actual: magic), offset: UInt64(offset))
            }
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<28]))
            let stored: UInt32 = bytes.load(littleEndianAt: 28)
            guard crc == stored else {
                throw CheckpointError(.headerChecksumMismatch(expected: stored, actual: crc), offset: UInt64(offset + 28))
            }
            let flags: UInt16 = bytes.load(littleEndianAt: 6)
            guard flags == 0 else { throw CheckpointError(.invalidField(field: "record flags", reason: "reserved bits set"), offset: UInt64(offset + 6)) }
            let payloadLength: UInt64 = bytes.load(littleEndianAt: 16)
            guard payloadLength <= UInt64(Int.max / 2) else {
                throw CheckpointError(.invalidField(field: "payload length", reason: "\(payloadLength) is too large"), offset: UInt64(offset + 16))
            }
            return Frame(
                kind: bytes.load(littleEndianAt: 4),
                headerLength: Int(bytes.load(littleEndianAt: 8) as UInt32),
                paddingLength: Int(bytes.load(littleEndianAt: 12) as UInt32),
                payloadLength: Int(payloadLength),
                payloadCRC: bytes.load(littleEndianAt: 24))
        }
    }

    // MARK: Trailer

    struct Trailer: Equatable {
        var indexOffset: Int
        var indexLength: Int
        var generation: UInt64
        var fileLength: Int
        var indexCRC: UInt32

        func encoded() -> [UInt8] {
            var w = LittleEndianWriter(capacity: trailerSize)
            w.write(littleEndian: trailerMagic)
            w.write(littleEndian: UInt32(ContainerLayout.version))
            w.write(littleEndian: UInt64(indexOffset))
            w.write(littleEndian: UInt64(indexLength))
            w.write(littleEndian: generation)
            w.write(littleEndian: UInt64(fileLength))
            w.write(littleEndian: indexCRC)
            w.write(zeros: 12)
            w.write(littleEndian: CRC32C.checksum(w.bytes))
            w.write(littleEndian: trailerEndMagic)
            return w.bytes
        }

        /// Parses a trailer found at `offset`, checking magics, CRC, version and its own position.
        static func parse(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(CheckpointError) -> Trailer {
            guard bytes.count >= trailerSize else {
                throw CheckpointError(.tornFile(reason: "\(bytes.count) bytes where a 64-byte trailer is needed"), offset: UInt64(offset))
            }
            let end: UInt32 = bytes.load(littleEndianAt: 60)
            let magic: UInt32 = bytes.load(littleEndianAt: 0)
            guard end == trailerEndMagic, magic == trailerMagic else {
                throw CheckpointError(.tornFile(reason: "no trailer magic at the end of the file"), offset: UInt64(offset))
            }
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<56]))
            let stored: UInt32 = bytes.load(littleEndianAt: 56)
            guard crc == stored else {
                throw CheckpointError(.tornFile(reason: "trailer checksum mismatch (stored 0x\(String(stored, radix: 16)), computed 0x\(String(crc, radix: 16)))"), offset: UInt64(offset + 56))
            }
            let version: UInt32 = bytes.load(littleEndianAt: 4)
            guard version == UInt32(ContainerLayout.version) else { throw CheckpointError(.unsupportedVersion(what: "trailer", version: version), offset: UInt64(offset + 4)) }
            guard bytes[44..<56].allSatisfy({ $0 == 0 }) else {
                throw CheckpointError(.invalidField(field: "trailer", reason: "reserved bytes not zero"), offset: UInt64(offset + 44))
            }
            let indexOffset: UInt64 = bytes.load(littleEndianAt: 8)
            let indexLength: UInt64 = bytes.load(littleEndianAt: 16)
            let fileLength: UInt64 = bytes.load(littleEndianAt: 32)
            // The index record ends where this trailer begins; the trailer ends the file.
            guard fileLength == UInt64(offset) + UInt64(trailerSize),
                  indexOffset >= UInt64(fileHeaderSize), indexOffset % UInt64(unitAlignment) == 0,
                  indexLength >= UInt64(frameSize), indexOffset <= UInt64(offset), UInt64(offset) - indexOffset >= indexLength,
                  alignUp(Int(indexOffset + indexLength), unitAlignment) == offset
            else {
                // An intact trailer in the wrong place (e.g. a copy of an old one at the end of a torn append).
                throw CheckpointError(.tornFile(reason: "the trailer at \(offset) describes a file of \(fileLength) bytes with its index at \(indexOffset)+\(indexLength)"), offset: UInt64(offset))
            }
            return Trailer(indexOffset: Int(indexOffset), indexLength: Int(indexLength), generation: bytes.load(littleEndianAt: 24),
                           fileLength: Int(fileLength), indexCRC: bytes.load(littleEndianAt: 40))
        }
    }

    // MARK: Deletion marker

    static func encodeDeletionHeader(name: String) -> [UInt8] {
        var w = LittleEndianWriter(capacity: 2 + name.utf8.count + 4)
        w.write(littleEndian: UInt16(name.utf8.count))
        w.write(Array(name.utf8))
        w.write(littleEndian: CRC32C.checksum(w.bytes))
        return w.bytes
    }

    static func parseDeletionHeader(_ bytes: UnsafeRawBufferPointer) throws(CheckpointError) -> String {
        guard bytes.count >= 6 else { throw CheckpointError(.truncated(what: "deletion marker", needed: 6, available: UInt64(bytes.count))) }
        let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<(bytes.count - 4)]))
        let stored: UInt32 = bytes.load(littleEndianAt: bytes.count - 4)
        guard crc == stored else { throw CheckpointError(.headerChecksumMismatch(expected: stored, actual: crc)) }
        let length = Int(bytes.load(littleEndianAt: 0) as UInt16)
        guard length + 6 == bytes.count,
              let name = String(validating: UnsafeRawBufferPointer(rebasing: bytes[2..<(2 + length)]), as: UTF8.self)
        else { throw CheckpointError(.invalidField(field: "deletion marker", reason: "bad name")) }
        try BlobHeader.validateName(name)
        return name
    }
}

extension UnsafeRawBufferPointer {
    /// A little-endian integer at `offset` (bounds checked by the caller).
    @inline(__always)
    func load<T: FixedWidthInteger>(littleEndianAt offset: Int) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
