/// A blob name compared, hashed and ordered by its UTF-8 bytes.
///
/// FORMAT.md matches and orders names byte-wise, as C++'s `std::string`,
/// Python's `str` and Rust's `String` do. Swift's `String` does not: its `==`
/// and hashing follow Unicode canonical equivalence, so `"\u{E9}"` (é, NFC)
/// and `"e\u{301}"` (e + combining acute, NFD) are one `String` key although
/// they are two different names in a file. Every table keyed by a blob name
/// (or by any name that reaches a file: node names, npz members, metadata
/// keys) uses this type instead of `String`.
///
///     var sizes: [BlobName: Int] = [:]
///     sizes[BlobName("\u{E9}")] = 1
///     sizes[BlobName("e\u{301}")] = 2   // a second key: sizes.count == 2
public struct BlobName: Hashable, Comparable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
    /// The name as a Swift string (its UTF-8 bytes are what the file holds).
    public let string: String

    /// The name `string` (its UTF-8 bytes, unnormalised).
    public init(_ string: String) { self.string = string }

    /// The name written as a string literal.
    public init(stringLiteral value: String) { self.string = value }

    /// The name itself.
    public var description: String { string }

    /// Byte-wise equality of the UTF-8 encodings. O(n), no allocation for native strings.
    public static func == (lhs: BlobName, rhs: BlobName) -> Bool { lhs.string.utf8.elementsEqual(rhs.string.utf8) }

    /// Byte-wise (unsigned) lexicographic order, the order of FORMAT.md's name tables.
    public static func < (lhs: BlobName, rhs: BlobName) -> Bool { lhs.string.utf8.lexicographicallyPrecedes(rhs.string.utf8) }

    /// Hashes the UTF-8 bytes, so that two spellings equal as Swift strings (NFC, NFD) hash apart.
    public func hash(into hasher: inout Hasher) {
        var copy = string
        copy.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }
}

extension String {
    /// Whether two strings have the same UTF-8 bytes (not Unicode canonical equivalence, which `==` uses).
    @inlinable
    public func hasSameBytes(as other: String) -> Bool { utf8.elementsEqual(other.utf8) }
}

extension Dictionary where Key == String, Value == String {
    /// Builds a `[String: String]` from key/value pairs whose keys are distinct
    /// byte strings, refusing two keys that Swift's `String` would merge
    /// (canonically equivalent Unicode, e.g. NFC and NFD spellings) instead of
    /// silently keeping only one of their values.
    ///
    /// - Throws: ``CheckpointError/Code/invalidField(field:reason:)`` naming `what` and both keys.
    package init(byteDistinctPairs pairs: some Sequence<(String, String)>, what: String) throws(CheckpointError) {
        self.init()
        for (key, value) in pairs {
            if let index = self.index(forKey: key) {
                let existing = self[index].key
                if existing.hasSameBytes(as: key) {
                    throw CheckpointError(.invalidField(field: what, reason: "duplicate key '\(key.prefix(64))'"))
                }
                throw CheckpointError(.invalidField(
                    field: what,
                    reason: "keys '\(existing.prefix(64))' (UTF-8 \(hexBytes(existing))) and '\(key.prefix(64))' (UTF-8 \(hexBytes(key))) differ in bytes but are canonically equivalent Unicode, which a Swift String dictionary cannot keep apart"))
            }
            self[key] = value
        }
    }
}

private func hexBytes(_ string: String) -> String {
    string.utf8.prefix(32).map { byte in
        let digits = String(byte, radix: 16)
        return digits.count == 1 ? "0" + digits : digits
    }.joined(separator: " ")
}
