import BlobCodec

/// NumPy's `.npz`: a ZIP archive of `.npy` members named `NAME.npy`
/// (`numpy.savez` stores them; `numpy.savez_compressed` deflates them).
///
/// Reading parses the central directory (ZIP64 included), checks that every
/// member lies inside the file without overlapping another, and reads stored
/// and deflated members. Before inflating anything it checks the declared
/// size against ``maximumMemberSize`` and against what deflate can
/// physically produce from the compressed size (1032:1), so a zip bomb is
/// refused instead of allocated; the inflated bytes must then match the
/// declared size and the member's CRC-32. Encrypted `.npy` members and other
/// methods are rejected. Members not named `NAME.npy` (a `README.txt`, a
/// directory entry `sub/`) are listed with ``Member/isArray`` false and not
/// judged further: numpy returns them as bytes, readers of tensors skip them
/// (``contents(of:in:verify:)`` still refuses encrypted ones and other methods).
///
/// Writing produces what `numpy.savez` does: stored members with ZIP64
/// sizes in every local header, and ZIP64 end records when needed.
public enum NpzArchive {
    /// The largest member this reader inflates or maps (default 64 GiB).
    nonisolated(unsafe) public static var maximumMemberSize = 64 << 30
    static let deflateMaximumRatio = 1032

    /// One member of the archive.
    public struct Member: Sendable, Equatable {
        /// The member's file name in the archive (`NAME.npy` for an array).
        public var name: String
        /// The zip compression method: 0 stored, 8 deflated.
        public var method: UInt16
        /// The zip CRC-32 of the uncompressed bytes.
        public var crc32: UInt32
        /// Bytes of the member's data in the file.
        public var compressedSize: Int
        /// Bytes of the member once decompressed.
        public var uncompressedSize: Int
        /// Offset of the member's (possibly compressed) data in the file.
        public var dataOffset: Int
        /// General purpose flag bit 0.
        public var isEncrypted: Bool
        /// Stored without compression: its data can be viewed in place.
        public var isStored: Bool { method == 0 }
        /// Named `NAME.npy`: an array. numpy keys other members by their full
        /// name and returns their bytes; tensor readers skip them.
        public var isArray: Bool { name.hasSuffix(".npy") }
    }

    // MARK: Reading

    /// Parses the ZIP structure of `bytes` (a whole file).
    public static func members(of bytes: UnsafeRawBufferPointer) throws(CheckpointError) -> [Member] {
        func invalid(_ reason: String) -> CheckpointError { CheckpointError(.invalidField(field: "zip archive", reason: reason)) }
        func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
        func u32(_ at: Int) -> Int { u16(at) | u16(at + 2) << 16 }
        func u64(_ at: Int) -> UInt64 { UInt64(u32(at)) | UInt64(u32(at + 4)) << 32 }
        func checkedInt(_ value: UInt64, _ what: String) throws(CheckpointError) -> Int {
            guard value <= UInt64(bytes.count) else { throw invalid("\(what) \(value) is beyond the end of the file (\(bytes.count) bytes)") }
            return Int(value)
        }
        let size = bytes.count
        guard size >= 22 else { throw CheckpointError(.truncated(what: "zip end of central directory", needed: 22, available: UInt64(size))) }
        // The end record: the last 22 bytes, or earlier by up to a 65535-byte comment.
        var eocd = -1
        var candidate = size - 22
        while candidate >= max(0, size - 22 - 65535) {
            if u32(candidate) == 0x0605_4B50 && candidate + 22 + u16(candidate + 20) == size { eocd = candidate; break }
            candidate -= 1
        }
        guard eocd >= 0 else { throw invalid("no end of central directory record (not a zip file, or truncated)") }
        guard u16(eocd + 4) == 0 && u16(eocd + 6) == 0 else { throw invalid("multi-disk archives are not supported") }
        var count = u16(eocd + 10)
        var directorySize = UInt64(u32(eocd + 12))
        var directoryOffset = UInt64(u32(eocd + 16))
        var directoryEnd = eocd
        if count == 0xFFFF || directorySize == 0xFFFF_FFFF || directoryOffset == 0xFFFF_FFFF {
            let locator = eocd - 20
            guard locator >= 0, u32(locator) == 0x0706_4B50 else { throw invalid("ZIP64 sizes without a ZIP64 end locator") }
            let record = try checkedInt(u64(locator + 8), "ZIP64 end record offset")
            guard record + 56 <= locator, u32(record) == 0x0606_4B50 else { throw invalid("bad ZIP64 end of central directory record") }
            let count64 = u64(record + 32)
            guard count64 <= UInt64(size / 46) else { throw invalid("\(count64) members cannot fit in \(size) bytes") }
            count = Int(count64)
            directorySize = u64(record + 40)
            directoryOffset = u64(record + 48)
            directoryEnd = record
        }
        let start = try checkedInt(directoryOffset, "central directory offset")
        let length = try checkedInt(directorySize, "central directory size")
        guard start <= directoryEnd, length <= directoryEnd - start else { throw invalid("central directory overlaps its end record") }
        var members: [Member] = []
        var names = Set<BlobName>()  // byte-wise, as zip and numpy compare names
        var position = start
        let end = start + length
        for index in 0..<count {
            guard position + 46 <= end, u32(position) == 0x0201_4B50 else { throw invalid("central directory entry \(index) is malformed") }
            let flags = u16(position + 8), method = u16(position + 10)
            let crc = UInt32(u32(position + 16))
            var compressed = UInt64(u32(position + 20)), uncompressed = UInt64(u32(position + 24))
            let nameLength = u16(position + 28), extraLength = u16(position + 30), commentLength = u16(position + 32)
            var localOffset = UInt64(u32(position + 42))
            let variable = position + 46
            guard variable + nameLength + extraLength + commentLength <= end else { throw invalid("central directory entry \(index) overruns the directory") }
            guard let name = String(validating: UnsafeRawBufferPointer(rebasing: bytes[variable..<(variable + nameLength)]), as: UTF8.self) else {
                throw invalid("member name of entry \(index) is not UTF-8")
            }
            // ZIP64 extra field: the 64-bit values of the fields set to 0xFFFFFFFF, in this order.
            var extra = variable + nameLength
            let extraEnd = extra + extraLength
            while extra + 4 <= extraEnd {
                let id = u16(extra), dataLength = u16(extra + 2)
                guard extra + 4 + dataLength <= extraEnd else { throw invalid("extra field of '\(name)' overruns its entry") }
                if id == 0x0001 {
                    var field = extra + 4
                    func next() throws(CheckpointError) -> UInt64 {
                        guard field + 8 <= extra + 4 + dataLength else { throw invalid("ZIP64 extra field of '\(name)' is too short") }
                        defer { field += 8 }
                        return u64(field)
                    }
                    if uncompressed == 0xFFFF_FFFF { uncompressed = try next() }
                    if compressed == 0xFFFF_FFFF { compressed = try next() }
                    if localOffset == 0xFFFF_FFFF { localOffset = try next() }
                }
                extra += 4 + dataLength
            }
            if name.hasSuffix(".npy") {
                guard flags & 1 == 0 else { throw invalid("member '\(name)' is encrypted") }
                guard method == 0 || method == 8 else { throw invalid("member '\(name)' uses compression method \(method) (only stored and deflate are supported)") }
            }
            guard names.insert(BlobName(name)).inserted else { throw invalid("duplicate member name '\(name)'") }
            let local = try checkedInt(localOffset, "local header offset of '\(name)'")
            guard local + 30 <= start, u32(local) == 0x0403_4B50 else { throw invalid("local header of '\(name)' is missing or outside the data area") }
            let dataOffset = local + 30 + u16(local + 26) + u16(local + 28)
            let compressedSize = try checkedInt(compressed, "compressed size of '\(name)'")
            guard dataOffset <= start, compressedSize <= start - dataOffset else { throw invalid("data of '\(name)' runs into the central directory") }
            guard uncompressed <= UInt64(Int.max) else { throw invalid("uncompressed size of '\(name)' overflows") }
            let uncompressedSize = Int(uncompressed)
            if method == 0 && flags & 1 == 0 && compressedSize != uncompressedSize {
                throw invalid("stored member '\(name)' has compressed size \(compressedSize) but uncompressed size \(uncompressedSize)")
            }
            members.append(Member(name: name, method: UInt16(method), crc32: crc, compressedSize: compressedSize,
                                  uncompressedSize: uncompressedSize, dataOffset: dataOffset, isEncrypted: flags & 1 != 0))
            position = variable + nameLength + extraLength + commentLength
        }
        // Members must not overlap (a classic zip-bomb construction).
        let ordered = members.sorted { $0.dataOffset < $1.dataOffset }
        for (a, b) in zip(ordered, ordered.dropFirst()) where a.dataOffset + a.compressedSize > b.dataOffset - 30 {
            throw invalid("members '\(a.name)' and '\(b.name)' overlap")
        }
        return members
    }

    /// The uncompressed bytes of a member: a view into `bytes` when stored,
    /// else a new buffer (owned by the returned array) after the size checks
    /// described above. Verifies the CRC-32 when `verify`.
    public static func contents(of member: Member, in bytes: UnsafeRawBufferPointer, verify: Bool = true) throws(CheckpointError) -> MemberContents {
        guard !member.isEncrypted else { throw CheckpointError(.invalidField(field: "zip archive", reason: "member '\(member.name)' is encrypted")) }
        guard member.isStored || member.method == 8 else {
            throw CheckpointError(.invalidField(field: "zip archive", reason: "member '\(member.name)' uses compression method \(member.method) (only stored and deflate are supported)"))
        }
        let compressed = UnsafeRawBufferPointer(rebasing: bytes[member.dataOffset..<(member.dataOffset + member.compressedSize)])
        let contents: MemberContents
        if member.isStored {
            contents = MemberContents(view: compressed)
        } else {
            guard member.uncompressedSize <= maximumMemberSize else {
                throw CheckpointError(.limitExceeded(what: "npz member '\(member.name)' size", limit: UInt64(maximumMemberSize), actual: UInt64(member.uncompressedSize)))
            }
            let (bound, overflow) = member.compressedSize.multipliedReportingOverflow(by: deflateMaximumRatio)
            guard overflow || member.uncompressedSize <= bound + 1024 else {
                throw CheckpointError(.invalidField(field: "npz member '\(member.name)'", reason: "declares \(member.uncompressedSize) bytes from \(member.compressedSize) compressed bytes, more than deflate can produce"))
            }
            let owned = try TensorStorage(checkedByteCount: member.uncompressedSize)
            do throws(CheckpointError) {
                try RawDeflate.inflate(compressed, into: UnsafeMutableRawBufferPointer(start: owned.base, count: owned.count))
            } catch {
                throw CheckpointError(.invalidField(field: "npz member '\(member.name)'", reason: "\(error.code)"))
            }
            contents = MemberContents(storage: owned)
        }
        if verify {
            let crc = ZipCRC32.checksum(contents.bytes)
            guard crc == member.crc32 else {
                throw CheckpointError(.invalidField(field: "npz member '\(member.name)'", reason: "CRC-32 mismatch: stored 0x\(String(member.crc32, radix: 16, uppercase: true)), computed 0x\(String(crc, radix: 16, uppercase: true))"))
            }
        }
        return contents
    }

    /// A member's uncompressed bytes: a view of the mapped file, or a buffer it owns.
    public final class MemberContents: @unchecked Sendable {
        let storage: TensorStorage?
        /// The bytes; valid while this object is alive.
        public let bytes: UnsafeRawBufferPointer
        init(view: UnsafeRawBufferPointer) { storage = nil; bytes = view }
        init(storage: TensorStorage) {
            self.storage = storage
            bytes = UnsafeRawBufferPointer(start: storage.base, count: storage.count)
        }
    }

    // MARK: Writing

    /// Writes `tensors` as an `.npz` (members `NAME.npy`, stored), replacing `path` atomically.
    ///
    /// - Throws: for a dtype numpy lacks (see ``NumpyFormat/descr(for:)``), a
    ///   duplicate name, or the errors of the write.
    public static func write(_ tensors: [BlobSource], to path: String, durability: Durability = .none) throws(CheckpointError) {
        var owned: [OwnedBuffer] = []
        var segments: [UnsafeRawBufferPointer] = []
        var central: [UInt8] = []
        var offset = 0
        var names = Set<BlobName>()  // byte-wise, as zip and numpy compare names
        for tensor in tensors {
            guard names.insert(BlobName(tensor.name)).inserted else {
                throw CheckpointError(.invalidField(field: "name", reason: "duplicate tensor name"), blobName: tensor.name, path: path)
            }
            let header: [UInt8]
            do throws(CheckpointError) { header = try NumpyFormat.encodeHeader(dtype: tensor.dtype, shape: tensor.shape) } catch {
                throw error.adding(blobName: tensor.name, path: path)
            }
            let name = Array((tensor.name + ".npy").utf8)
            guard name.count <= Int(UInt16.max) else {
                throw CheckpointError(.invalidField(field: "name", reason: "too long for a zip member"), blobName: tensor.name, path: path)
            }
            let size = UInt64(header.count + tensor.bytes.count)
            let crc = header.withUnsafeBytes { ZipCRC32.checksum(tensor.bytes, continuing: ZipCRC32.checksum($0)) }
            // Local header: sizes in a ZIP64 extra field, as numpy's force_zip64 writes them.
            var local = LittleEndianWriter(capacity: 30 + name.count + 20)
            local.write(littleEndian: UInt32(0x0403_4B50))
            local.write(littleEndian: UInt16(45))  // version needed: ZIP64
            local.write(littleEndian: UInt16(0x0800))  // UTF-8 names
            local.write(littleEndian: UInt16(0))  // stored
            local.write(littleEndian: UInt16(0))  // time 00:00
            local.write(littleEndian: UInt16(0x21))  // date 1980-01-01
            local.write(littleEndian: crc)
            local.write(littleEndian: UInt32(0xFFFF_FFFF))
            local.write(littleEndian: UInt32(0xFFFF_FFFF))
            local.write(littleEndian: UInt16(name.count))
            local.write(littleEndian: UInt16(20))
            local.write(name)
            local.write(littleEndian: UInt16(0x0001))
            local.write(littleEndian: UInt16(16))
            local.write(littleEndian: size)
            local.write(littleEndian: size)
            let localBytes = OwnedBuffer(local.bytes + header)
            owned.append(localBytes)
            segments.append(localBytes.buffer)
            segments.append(tensor.bytes)
            // Central directory entry: ZIP64 extra only for values that need it.
            var extra = LittleEndianWriter(capacity: 28)
            let big = size >= 0xFFFF_FFFF, farOffset = offset >= 0xFFFF_FFFF
            if big || farOffset {
                extra.write(littleEndian: UInt16(0x0001))
                extra.write(littleEndian: UInt16((big ? 16 : 0) + (farOffset ? 8 : 0)))
                if big { extra.write(littleEndian: size); extra.write(littleEndian: size) }
                if farOffset { extra.write(littleEndian: UInt64(offset)) }
            }
            var entry = LittleEndianWriter(capacity: 46 + name.count + extra.bytes.count)
            entry.write(littleEndian: UInt32(0x0201_4B50))
            entry.write(littleEndian: UInt16(45))
            entry.write(littleEndian: UInt16(45))
            entry.write(littleEndian: UInt16(0x0800))
            entry.write(littleEndian: UInt16(0))
            entry.write(littleEndian: UInt16(0))
            entry.write(littleEndian: UInt16(0x21))
            entry.write(littleEndian: crc)
            entry.write(littleEndian: big ? UInt32(0xFFFF_FFFF) : UInt32(size))
            entry.write(littleEndian: big ? UInt32(0xFFFF_FFFF) : UInt32(size))
            entry.write(littleEndian: UInt16(name.count))
            entry.write(littleEndian: UInt16(extra.bytes.count))
            entry.write(littleEndian: UInt16(0))  // comment
            entry.write(littleEndian: UInt16(0))  // disk
            entry.write(littleEndian: UInt16(0))  // internal attributes
            entry.write(littleEndian: UInt32(0o600 << 16))  // external attributes: -rw-------, as zipfile writes
            entry.write(littleEndian: farOffset ? UInt32(0xFFFF_FFFF) : UInt32(offset))
            entry.write(name)
            entry.write(extra.bytes)
            central += entry.bytes
            offset += localBytes.buffer.count + tensor.bytes.count
        }
        var end = LittleEndianWriter(capacity: 98)
        let count = tensors.count
        let needsZip64 = count >= 0xFFFF || offset >= 0xFFFF_FFFF || central.count >= 0xFFFF_FFFF
        if needsZip64 {
            let recordOffset = offset + central.count
            end.write(littleEndian: UInt32(0x0606_4B50))
            end.write(littleEndian: UInt64(44))
            end.write(littleEndian: UInt16(45))
            end.write(littleEndian: UInt16(45))
            end.write(littleEndian: UInt32(0))
            end.write(littleEndian: UInt32(0))
            end.write(littleEndian: UInt64(count))
            end.write(littleEndian: UInt64(count))
            end.write(littleEndian: UInt64(central.count))
            end.write(littleEndian: UInt64(offset))
            end.write(littleEndian: UInt32(0x0706_4B50))
            end.write(littleEndian: UInt32(0))
            end.write(littleEndian: UInt64(recordOffset))
            end.write(littleEndian: UInt32(1))
        }
        end.write(littleEndian: UInt32(0x0605_4B50))
        end.write(littleEndian: UInt16(0))
        end.write(littleEndian: UInt16(0))
        end.write(littleEndian: UInt16(min(count, 0xFFFF)))
        end.write(littleEndian: UInt16(min(count, 0xFFFF)))
        end.write(littleEndian: UInt32(min(central.count, 0xFFFF_FFFF)))
        end.write(littleEndian: UInt32(min(offset, 0xFFFF_FFFF)))
        end.write(littleEndian: UInt16(0))
        let tail = OwnedBuffer(central + end.bytes)
        owned.append(tail)
        segments.append(tail.buffer)
        try withExtendedLifetime(owned) { () throws(CheckpointError) in
            try AtomicFile.write(segments, to: path, durability: durability, calls: .live)
        }
    }
}
