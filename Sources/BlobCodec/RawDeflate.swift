import CZlib

/// ZIP's CRC-32 (IEEE 802.3 polynomial, as zlib's `crc32`), for `.npz` members.
/// Not the CRC32C this format uses everywhere else.
public enum ZipCRC32 {
    /// The CRC-32 of `bytes`, continuing from `crc` (0 to start).
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        var crc = UInt(crc)
        var offset = 0
        while offset < bytes.count {
            let n = min(bytes.count - offset, Int(UInt32.max))
            crc = CZlib.crc32(crc, bytes.baseAddress!.advanced(by: offset).assumingMemoryBound(to: Bytef.self), uInt(n))
            offset += n
        }
        return UInt32(truncatingIfNeeded: crc)
    }
}

/// Raw deflate streams (no zlib or gzip wrapper), as ZIP stores them.
public enum RawDeflate {
    /// The first `count` bytes the stream decodes to (fewer if it ends before).
    ///
    /// - Throws: ``CheckpointError/Code/corruptChunk(chunk:reason:)`` for a malformed stream.
    public static func inflatePrefix(_ input: UnsafeRawBufferPointer, count: Int) throws(CheckpointError) -> [UInt8] {
        var stream = z_stream()
        guard inflateInit2_(&stream, -15, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw CheckpointError(.compressionFailed(chunk: 0, reason: "inflateInit2 failed"))
        }
        defer { inflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: count)
        let produced = output.withUnsafeMutableBytes { out -> Int32 in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
            stream.avail_in = uInt(min(input.count, Int(UInt32.max)))
            stream.next_out = out.baseAddress?.assumingMemoryBound(to: Bytef.self)
            stream.avail_out = uInt(count)
            return CZlib.inflate(&stream, Z_SYNC_FLUSH)
        }
        guard produced == Z_OK || produced == Z_STREAM_END || produced == Z_BUF_ERROR else {
            throw CheckpointError(.corruptChunk(chunk: 0, reason: "deflate stream is malformed (zlib status \(produced))"))
        }
        output.removeLast(Int(stream.avail_out))
        return output
    }

    /// Inflates `input` into exactly `output.count` bytes.
    ///
    /// - Throws: ``CheckpointError/Code/corruptChunk(chunk:reason:)`` for a
    ///   malformed stream, one that decodes to more or fewer bytes than
    ///   `output.count`, or one followed by stray input. Never writes past `output`.
    public static func inflate(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws(CheckpointError) {
        func corrupt(_ reason: String) -> CheckpointError { CheckpointError(.corruptChunk(chunk: 0, reason: reason)) }
        var stream = z_stream()
        guard inflateInit2_(&stream, -15, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw CheckpointError(.compressionFailed(chunk: 0, reason: "inflateInit2 failed"))
        }
        defer { inflateEnd(&stream) }
        // One byte of room past the end of `output`: it tells a finished stream from one that wants more.
        let scratch = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
        defer { scratch.deallocate() }
        var inputOffset = 0, outputOffset = 0
        while true {
            if stream.avail_in == 0 && inputOffset < input.count {
                let n = min(input.count - inputOffset, Int(UInt32.max))
                stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress!.advanced(by: inputOffset).assumingMemoryBound(to: Bytef.self))
                stream.avail_in = uInt(n)
                inputOffset += n
            }
            if stream.avail_out == 0 && outputOffset < output.count {
                let n = min(output.count - outputOffset, Int(UInt32.max))
                stream.next_out = output.baseAddress!.advanced(by: outputOffset).assumingMemoryBound(to: Bytef.self)
                stream.avail_out = uInt(n)
                outputOffset += n
            }
            let outputFull = stream.avail_out == 0
            if outputFull {
                stream.next_out = scratch
                stream.avail_out = 1
            }
            let status = CZlib.inflate(&stream, Z_NO_FLUSH)
            if outputFull && stream.avail_out == 0 { throw corrupt("deflate stream decodes to more than the declared \(output.count) bytes") }
            if outputFull { stream.avail_out = 0 }
            switch status {
            case Z_STREAM_END:
                let produced = Int(stream.total_out)
                guard produced == output.count else { throw corrupt("deflate stream decodes to \(produced) bytes, declared \(output.count)") }
                guard stream.avail_in == 0 && inputOffset == input.count else { throw corrupt("data after the end of the deflate stream") }
                return
            case Z_OK:
                continue
            case Z_BUF_ERROR:
                if stream.avail_in == 0 && inputOffset == input.count { throw corrupt("deflate stream is truncated") }
                continue
            default:
                throw corrupt("deflate stream is malformed (zlib status \(status))")
            }
        }
    }
}
